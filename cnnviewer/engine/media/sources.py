"""Frame sources behind one interface: a video file, an image, or a folder of images.

Cameras are pushed in by the UI (Qt Multimedia) as `Frame`s; files are read
here, Qt-free, so the command line and the tests drive the same code. Video is
decoded with PyAV (FFmpeg in the wheel), which reads every common container
and codec without a system FFmpeg and gives frames as numpy arrays directly.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnviewer.engine.errors import ImageError, first_line
from cnnviewer.engine.media.files import regular_file
from cnnviewer.engine.media.images import IMAGE_SUFFIXES, image_files, load_image



@dataclass(frozen=True, eq=False)
class Frame:
    """A frame with its source name and capture time (for latency, measured not guessed)."""

    index: int
    name: str
    pixels: np.ndarray        # (H, W, 3) uint8 RGB
    captured: float           # time.perf_counter() when it was read or delivered


class FrameSource(ABC):
    """Frames one after another; `read` returns None at the end.

    A bad frame raises ImageError and the source moves past it, so a caller can
    report it and read on (a broken video stream simply ends after the error).
    """

    name: str = ""
    fps: float = 25.0          # the rate to play it at in real time

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None when there are no more."""

    @property
    def length(self) -> int | None:
        """Number of frames, when the source knows it."""
        return None

    def seek(self, index: int) -> None:
        """Make frame `index` the next one read (replay, loop, the position slider)."""
        raise ImageError(f"{self.name}: cannot jump to a frame in this source")

    def close(self) -> None:
        """Release files and decoders."""

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageSequence(FrameSource):
    """Image files in name order (a folder), or a single image."""

    def __init__(self, files: list[Path], name: str, fps: float = 25.0) -> None:
        self._files, self._next, self.name, self.fps = files, 0, name, fps

    def __len__(self) -> int:
        return len(self._files)

    @property
    def length(self) -> int:
        return len(self._files)

    def seek(self, index: int) -> None:
        self._next = min(max(int(index), 0), len(self._files))

    def read(self) -> Frame | None:
        if self._next >= len(self._files):
            return None
        index, file = self._next, self._files[self._next]
        self._next += 1
        return Frame(index, file.name, load_image(file).pixels, time.perf_counter())


class VideoFile(FrameSource):
    """A video file decoded by PyAV; frames as RGB uint8 arrays."""

    def __init__(self, path: Path) -> None:
        import av

        self.name = path.name
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as error:
            raise ImageError(f"{path.name}: not a readable video ({first_line(error) or 'no video stream'})") from None
        stream.thread_type = "AUTO"
        self._stream = stream
        self.fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        self.frame_count = stream.frames or None
        self._frames = self._container.decode(stream)
        self._next, self._ended = 0, False
        self._pending = None   # the decoded frame a seek landed on, returned by the next read

    @property
    def length(self) -> int | None:
        return self.frame_count

    def seek(self, index: int) -> None:
        """Jump to the key frame before `index`, then decode forward to it (exact, not nearest key)."""
        import av

        index = max(int(index), 0)
        stream, base = self._stream, self._stream.time_base
        start = stream.start_time or 0
        try:
            if base is None:
                raise ValueError("no time base")
            self._container.seek(start + int(index / self.fps / base), backward=True, any_frame=False,
                                 stream=stream)
            self._frames = self._container.decode(stream)
            self._ended, self._pending = False, None
            for decoded in self._frames:
                at = round((decoded.pts - start) * base * self.fps) if decoded.pts is not None else index
                if at >= index:
                    self._pending, self._next = decoded, at
                    return
            self._ended = True
        except (av.FFmpegError, OSError, ValueError) as error:
            raise ImageError(f"{self.name}: cannot jump to frame {index} ({first_line(error)})") from None

    def read(self) -> Frame | None:
        import av

        if self._pending is not None:
            decoded, self._pending = self._pending, None
            index, self._next = self._next, self._next + 1
            return Frame(index, f"{self.name}#{index}", decoded.to_ndarray(format="rgb24"), time.perf_counter())
        if self._ended:
            return None
        try:
            decoded = next(self._frames)
        except StopIteration:
            self._ended = True
            return None
        except (av.FFmpegError, OSError, ValueError) as error:
            self._ended = True
            raise ImageError(f"{self.name}: the video breaks off after frame {self._next} "
                             f"({first_line(error)})") from None
        index, self._next = self._next, self._next + 1
        return Frame(index, f"{self.name}#{index}", decoded.to_ndarray(format="rgb24"), time.perf_counter())

    def close(self) -> None:
        self._container.close()


def open_source(source: str | Path) -> FrameSource:
    """A video file, an image, or a folder of images (sorted by name).

    Raises:
        ImageError: nothing readable there.
    """
    path = Path(source)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise ImageError(f"{path.name}: no images in this folder")
        return ImageSequence(files, path.name)
    if not path.exists():
        raise ImageError(f"{path.name}: no such file or folder")
    regular_file(path)
    if path.suffix.lower() in IMAGE_SUFFIXES and path.suffix.lower() != ".gif":
        return ImageSequence([path], path.name)
    return VideoFile(path)
