"""nuScenes detection metrics (mAP, TP errors, NDS) identical to nuscenes-devkit, submission IO, reports."""
