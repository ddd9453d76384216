"""Geometry with stated frames: SE(3), quaternions, camera models, projection, 3D boxes, geodesy.

Imports nothing else of avfusion. Conventions (DESIGN.md section 3): nuScenes frames, row-major
(N, 3) points, (w, x, y, z) quaternions, transforms named `target_from_source`.
"""
