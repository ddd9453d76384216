"""Fast kernels beside their reference twins: voxelization and BEV pooling."""
