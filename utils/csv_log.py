"""Resumable append-only CSV logs: one row appended and flushed per call, and a restart that keeps the rows a
resumed run still stands by (rewritten atomically, without a line cut by a kill)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

from utils.errors import ConfigError
from utils.fileio import atomic_path, writing


class CsvLog:
    """A CSV file that grows by one appended row per call (never rewritten per row).

    `keep` restarts the log from `source` (default: the file itself), keeping only the complete rows it accepts
    (a killed writer can leave a short last line); `kept` holds them. Used once at resume time: to drop rows
    written after a checkpoint, to carry history into a new folder, or to skip the items a killed run finished.
    `strict_columns` refuses a file written with other columns instead of reading it. `float_format` (e.g.
    "{:.6g}") formats float values; without it they are written as Python prints them.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], keep: Callable[[dict], bool] | None = None,
                 source: str | Path | None = None, strict_columns: bool = False, float_format: str | None = None):
        self.path, self.columns, self.float_format = Path(path), list(columns), float_format
        self.kept: list[dict] = []
        if keep is not None:
            self._restart(Path(source) if source else self.path, keep, strict_columns)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
            if new:
                self._writer.writeheader()

    def _restart(self, source: Path, keep: Callable[[dict], bool], strict_columns: bool) -> None:
        if source.is_file():
            with open(source, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if strict_columns and source.stat().st_size and reader.fieldnames != self.columns:
                    raise ConfigError(f"{source}: written by another kind of run (columns {reader.fieldnames}); "
                                      "choose a new file")
                self.kept = [row for row in reader if None not in row.values() and keep(row)]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.kept)

    def done(self, column: str) -> set[str]:
        """The values of `column` in the rows kept at restart, e.g. the videos a killed run finished."""
        return {row[column] for row in self.kept}

    def append(self, row: dict) -> None:
        with writing(self.path):
            self._writer.writerow({key: self._format(value) for key, value in row.items()})
            self._file.flush()

    def _format(self, value):
        return self.float_format.format(value) if self.float_format and isinstance(value, float) else value

    def close(self) -> None:
        self._file.close()
