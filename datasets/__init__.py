"""nuScenes logs through nuscenes-devkit, map rasters, and the synthetic nuScenes-format world."""
