"""Camera image reading with optional downscaling that keeps the intrinsics consistent."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.errors import InputError
from avfusion.sensors.errors import MissingSensorFile, UnreadableSensorFile

# Scales the JPEG decoder produces directly (DCT-domain scaling, several times faster than a full
# decode followed by a resize).
_REDUCED_DECODE_FLAGS = {
    1.0: cv2.IMREAD_COLOR,
    0.5: cv2.IMREAD_REDUCED_COLOR_2,
    0.25: cv2.IMREAD_REDUCED_COLOR_4,
    0.125: cv2.IMREAD_REDUCED_COLOR_8,
}

_JPEG_START = b"\xff\xd8"
_JPEG_START_OF_SCAN = b"\xff\xda"
_JPEG_END = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END_CHUNK = b"IEND\xaeB`\x82"


def check_image_complete(path: Path, data: bytes) -> None:
    """Raise `UnreadableSensorFile` when the bytes of an image file are empty or cut short.

    The JPEG decoder fills the rows after a cut with grey and only warns on stderr, so a truncated
    JPEG would be used half grey: its last scan must be followed by the end-of-image marker
    (inside entropy-coded data an 0xFF byte is always followed by 0x00 or a restart marker, so
    FF D9 after the last start-of-scan is the end of the image). A PNG must end with its IEND chunk.
    """
    if not data:
        raise UnreadableSensorFile(path, "empty image file", "0 bytes")
    if data.startswith(_JPEG_START):
        last_scan = data.rfind(_JPEG_START_OF_SCAN)
        if last_scan < 0 or data.find(_JPEG_END, last_scan + 2) < 0:
            raise UnreadableSensorFile(
                path, "truncated JPEG", f"no end-of-image marker after the last scan ({len(data)} bytes)"
            )
    elif data.startswith(_PNG_SIGNATURE) and _PNG_END_CHUNK not in data[-32:]:
        raise UnreadableSensorFile(path, "truncated PNG", f"no IEND chunk at the end ({len(data)} bytes)")


def read_camera_image(
    path: str | os.PathLike[str],
    intrinsics: CameraIntrinsics,
    scale: float = 1.0,
) -> tuple[np.ndarray, CameraIntrinsics]:
    """Read an image and scale it, returning it with the intrinsics of the scaled image.

    Args:
        path: a JPEG/PNG file.
        intrinsics: of the full-size image; its width/height must equal the file's.
        scale: output pixels per input pixel, in (0, 1]. 1, 1/2, 1/4 and 1/8 decode directly at that
            size (the decoder rounds partial 8x8 blocks up: 900 rows at 1/8 give 113); other
            scales decode fully and resize with area averaging to `round(size * scale)`.
    Returns:
        `(H', W', 3)` uint8 RGB image and its `CameraIntrinsics`.
    Raises:
        MissingSensorFile: the file does not exist.
        UnreadableSensorFile (a `FileFormatError`): the file is empty, truncated
            (`check_image_complete`) or cannot be decoded, or its size does not match `intrinsics`.
    """
    if not 0.0 < scale <= 1.0:
        raise InputError(f"image scale must be in (0, 1], got {scale}")
    file_path = Path(path)
    try:
        data = file_path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise MissingSensorFile(file_path, "camera image") from error
    except OSError as error:
        raise UnreadableSensorFile(file_path, "unreadable image file", error.strerror or str(error)) from error
    check_image_complete(file_path, data)
    flag = _REDUCED_DECODE_FLAGS.get(float(scale))
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag if flag is not None else cv2.IMREAD_COLOR)
    if bgr is None:
        raise UnreadableSensorFile(file_path, "undecodable image", "not a decodable image")
    height, width = bgr.shape[:2]
    if flag is not None:
        factor = round(1.0 / scale)
        expected = (-(-intrinsics.height // factor), -(-intrinsics.width // factor))
        if (height, width) != expected:
            raise UnreadableSensorFile(
                file_path,
                "image size mismatch",
                f"decoded at 1/{factor} to {width}x{height}, expected {expected[1]}x{expected[0]} "
                f"for a {intrinsics.width}x{intrinsics.height} image",
            )
        new_intrinsics = intrinsics if factor == 1 else intrinsics.scaled(scale, scale, width, height)
    else:
        if (height, width) != (intrinsics.height, intrinsics.width):
            raise UnreadableSensorFile(
                file_path,
                "image size mismatch",
                f"image is {width}x{height}, calibration says {intrinsics.width}x{intrinsics.height}",
            )
        new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
        bgr = cv2.resize(bgr, (new_width, new_height), interpolation=cv2.INTER_AREA)
        new_intrinsics = intrinsics.resized(new_width, new_height)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), new_intrinsics
