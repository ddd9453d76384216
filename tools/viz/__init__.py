"""The viewer and renderer of the fused BEV (Open3D)."""
