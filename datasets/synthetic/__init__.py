"""Generator of nuScenes-format driving logs: lidar, six cameras, GNSS, maps and annotated agents."""
