"""Test media made from skimage's astronaut: frames with known face positions, as a video and a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

ASTRONAUT_FACE = (179, 60, 266, 173)   # x1, y1, x2, y2 in the 512x512 photo, looked at by eye
SECOND_FACE_AT = (460, 300)            # where the pasted copy of the face goes (top-left)
SECOND_FACE_SIZE = (104, 120)


@dataclass(frozen=True)
class Clip:
    video: Path
    folder: Path
    faces: list[list[tuple[float, float, float, float]]]   # expected face boxes, per frame


def astronaut_frame(index: int) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """A 640x480 frame: the astronaut shifted and scaled; from frame 6 on, a second face pasted in."""
    photo = Image.fromarray(data.astronaut())
    scale = 0.75 + 0.03 * (index % 6)
    shift_x, shift_y = -40 + 12 * index, -30 + 3 * index
    size = round(512 * scale)
    frame = Image.new("RGB", (640, 480), (90, 90, 90))
    frame.paste(photo.resize((size, size), Image.Resampling.BILINEAR), (shift_x, shift_y))
    faces = [tuple(v * scale + (shift_x if i % 2 == 0 else shift_y) for i, v in enumerate(ASTRONAUT_FACE))]
    if index >= 6:
        x1, y1, x2, y2 = ASTRONAUT_FACE
        crop = photo.crop((x1 - 19, y1 - 20, x2 + 24, y2 + 17)).resize(SECOND_FACE_SIZE)
        frame.paste(crop, SECOND_FACE_AT)
        sx, sy = SECOND_FACE_SIZE[0] / (x2 - x1 + 43), SECOND_FACE_SIZE[1] / (y2 - y1 + 37)
        faces.append((SECOND_FACE_AT[0] + 19 * sx, SECOND_FACE_AT[1] + 20 * sy,
                      SECOND_FACE_AT[0] + (x2 - x1 + 19) * sx, SECOND_FACE_AT[1] + (y2 - y1 + 20) * sy))
    return np.asarray(frame), faces


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Encode RGB frames with PyAV (MPEG-4 part 2, high quality); the container follows the suffix."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_clip(folder: Path, count: int = 12, fps: int = 10) -> Clip:
    """The frames as an MPEG-4 video and as a folder of PNGs."""
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    frames, faces = [], []
    for index in range(count):
        pixels, boxes = astronaut_frame(index)
        frames.append(pixels)
        faces.append(boxes)
        Image.fromarray(pixels).save(frames_dir / f"{index:04d}.png")
    return Clip(write_video(folder / "astronaut.mp4", frames, fps), frames_dir, faces)


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
