"""The folder of images being annotated. Every image name the client sends is looked up here, so no
path from the client ever reaches the file system: a name is a relative POSIX path found by the scan."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from projects.sam_finetune.data_sources import IMAGE_EXTENSIONS, DataError


class PathRefused(ValueError):
    """A client path that is absolute, climbs out of the folder or is not one of its images."""


class ImageFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise DataError(f"{root}: images folder not found")
        self.names: list[str] = self._scan()
        if not self.names:
            raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        self._paths = {name: self.root / name for name in self.names}

    def _scan(self) -> list[str]:
        names = []
        for path in self.root.rglob("*"):
            relative = path.relative_to(self.root)
            if any(part.startswith(".") for part in relative.parts):  # hidden files, our caches
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            if not path.resolve().is_relative_to(self.root):  # a symlink leading out of the folder
                continue
            names.append(relative.as_posix())
        return sorted(names)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(self.check(name))

    def check(self, name: str) -> str:
        """`name` if it is one of the folder's images; PathRefused otherwise (with why)."""
        if not isinstance(name, str) or not name or len(name) > 1024 or "\\" in name or "\x00" in name:
            raise PathRefused(f"{name!r}: not an image name")
        pure = PurePosixPath(name)
        if pure.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
            raise PathRefused(f"{name!r}: paths must be relative to the images folder, without '..'")
        if name not in self._paths:
            raise PathRefused(f"{name!r}: not an image of the folder")
        return name

    def path(self, name: str) -> Path:
        return self._paths[self.check(name)]

    def next_name(self, name: str) -> str | None:
        i = self.index(name)
        return self.names[i + 1] if i + 1 < len(self.names) else None
