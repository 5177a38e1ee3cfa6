"""Video analysis stage: one decoding pass finds what changed, keeps the frames the
screenshots will need, and turns the changes into a timeline of events.

The build, and tests that check what the pass keeps, run the same loop from here: what
``KeepPolicy`` keeps depends on the changes as they stream by, so the loop is the contract.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import decode, diff, frames, keyframes, shots
from .model import MediaInfo, VisualTimeline


@dataclass
class VideoAnalysis:
    geometry: decode.AnalysisGeometry
    video: frames.VideoPass  # holds the kept frames the screenshots come from: close() it when done
    timeline: VisualTimeline
    content_changes: list[int]  # frame indexes where the content changed (stand-ins never cross one)


def analyse_video(path: Path, info: MediaInfo, threads: int = 0) -> VideoAnalysis:
    """Decode ``path`` once (``threads`` decoder threads, 0: libavcodec's choice), diff every
    analysis frame with the one before, keep the settled screen before each change, and find
    the events. Raises DecodeError as the pass does; on any error the kept frames are dropped."""
    geometry = decode.analysis_geometry(info)
    counter = diff.AmbientCounter(diff.cells_shape(geometry.width, geometry.height), geometry.fps)
    video = frames.VideoPass(path, geometry, threads=threads)
    keep = shots.KeepPolicy(counter, geometry.scale, geometry.fps)
    first = diff.FirstFrame()
    diffs: list[diff.FrameDiff] = []
    try:
        for change in diff.diff_frames(video, geometry.scale, counter, first, lambda: video.scaler,
                                          video.refreshed):
            diffs.append(change)
            if keep.wants(change):  # the settled screen before this change: a screenshot candidate
                video.keep(change.index - 1)
        timeline = keyframes.find_events(diffs, counter, geometry.fps, geometry.scale, video.count,
                                         (info.width, info.height), first)
        content_changes = shots.content_changes(diffs, counter, geometry.scale)
    except BaseException:
        video.close()
        raise
    return VideoAnalysis(geometry, video, timeline, content_changes)
