"""Writing figures and other output files atomically.

Every file is rendered in memory first, written to a temporary file in the target
folder and moved over the target with ``os.replace``. So an error at any point, a full
disk included, leaves either no file or the previous complete one, never a partial one.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from robustdc.plots.style import DPI

#: File formats that :func:`save_figure` writes.
FIGURE_FORMATS: tuple[str, ...] = ("png", "svg")


class OutputPathError(OSError):
    """An output file cannot be written; the message names the path and the fix."""


def figure_bytes(figure: Figure, file_format: str = "png", dpi: int = DPI) -> bytes:
    """Render ``figure`` as ``png`` or ``svg`` and return the file content."""
    if file_format not in FIGURE_FORMATS:
        raise ValueError(
            f"unsupported figure format {file_format!r}; expected one of: "
            f"{', '.join(FIGURE_FORMATS)}"
        )
    buffer = io.BytesIO()
    # Without the render date (SVG) and the software tag (PNG) identical figures give
    # identical files.
    metadata = {"Date": None} if file_format == "svg" else {"Software": None}
    figure.savefig(buffer, format=file_format, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def save_figure(
    figure: Figure,
    path: str | os.PathLike[str],
    formats: Sequence[str] = FIGURE_FORMATS,
    dpi: int = DPI,
) -> list[Path]:
    """Write ``figure`` once per format and return the written paths.

    Args:
        figure: the figure to save.
        path: output path without suffix; a ``.png`` or ``.svg`` suffix is dropped, so
            ``plots/accuracy`` and ``plots/accuracy.png`` both write
            ``plots/accuracy.png`` and ``plots/accuracy.svg``.
        formats: ``png``, ``svg`` or both.
        dpi: resolution of the PNG file; a figure of W x H inches is W*dpi x H*dpi
            pixels.

    Raises:
        OutputPathError: the folder does not exist or cannot be written.
        ValueError: an unsupported format.
    """
    stem = Path(path)
    if stem.suffix.lower().lstrip(".") in FIGURE_FORMATS:
        stem = stem.with_suffix("")
    targets = {fmt: stem.with_name(f"{stem.name}.{fmt}") for fmt in formats}
    for target in targets.values():
        check_output_folder(target)
    for fmt, target in targets.items():
        write_bytes_atomic(target, figure_bytes(figure, fmt, dpi))
    return list(targets.values())


def check_output_folder(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if its folder exists and is a folder, else raise.

    Raises:
        OutputPathError: the folder is missing or is not a folder.
    """
    target = Path(path)
    folder = target.parent
    if not folder.exists():
        raise OutputPathError(
            f"cannot write {target}: folder {folder} does not exist; create it or choose "
            "another output path",
        )
    if not folder.is_dir():
        raise OutputPathError(
            f"cannot write {target}: {folder} is not a folder; choose another output path",
        )
    if target.is_dir():
        raise OutputPathError(
            f"cannot write {target}: it is a folder; give a file name",
        )
    return target


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    Raises:
        OutputPathError: the folder is missing, is not a folder, or cannot be written
            (permissions, read-only file system, full disk). No temporary file is
            left behind.
    """
    target = check_output_folder(path)
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as err:
        raise _write_error(target, err) from err
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; use the usual mode.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(err, OSError):
            raise _write_error(target, err) from err
        raise
    return target


def _write_error(target: Path, err: OSError) -> OutputPathError:
    reason = err.strerror or type(err).__name__
    return OutputPathError(
        f"cannot write {target}: {reason.lower()}; choose another output path or fix "
        f"the permissions of {target.parent}",
    )


def _umask() -> int:
    # os.umask can only be read by setting it, so set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
