"""Real damage to a file in a real store (a local folder or S3 through s3fs), as a disk, a
half-finished copy or a careless hand leaves it: bytes flipped in place, the object cut short,
the object gone. Used by the verified-checkpoint tests (issue 23, point 1)."""

from __future__ import annotations

from kubetune.storage import Store

DAMAGES = ("flipped", "truncated", "missing")


def damage(store: Store, rel: str, how: str) -> None:
    """Damage the file `rel` of `store`: `flipped` inverts 64 KiB (or all of a smaller file)
    in its middle, keeping the size; `truncated` keeps its first half; `missing` removes it."""
    path = store.path(rel)
    if how == "missing":
        store.fs.rm(path)
        return
    data = store.fs.cat_file(path)
    if how == "truncated":
        store.fs.pipe_file(path, data[: len(data) // 2])
        return
    assert how == "flipped", how
    span = min(64 << 10, len(data))
    start = (len(data) - span) // 2
    store.fs.pipe_file(path, data[:start] + bytes(b ^ 0xFF for b in data[start:start + span]) + data[start + span:])
