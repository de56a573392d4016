"""Fill without sockets: readers follow the writer, the last byte waits for verification."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imgaccel.cache import writeback
from imgaccel.cache.fill import Fill, FillFailed
from imgaccel.errors import DigestMismatch
from imgaccel.oci.digest import Digest

DATA = hashlib.sha512(b"fill").digest() * 40  # 2560 bytes


def new_fill(tmp_path: Path, data: bytes = DATA, digest: Digest | None = None) -> Fill:
    return Fill(digest or Digest.of(data), tmp_path / "blob.part", len(data))


async def read_exactly(reader: AsyncIterator[bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += await anext(reader)
    return out


async def still_waiting(task: asyncio.Task[bytes]) -> bool:
    """True if ``task`` stays blocked while the loop runs everything else that is ready."""
    for _ in range(20):
        await asyncio.sleep(0)
    return not task.done()


async def test_readers_stream_while_the_writer_writes(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    reader = fill.read()

    await fill.write_at(0, DATA[:1000])
    assert await read_exactly(reader, 1000) == DATA[:1000]

    await fill.write_at(1000, DATA[1000:2000])
    assert await read_exactly(reader, 1000) == DATA[1000:2000]
    await reader.aclose()
    await fill.finish(RuntimeError("test over"))


async def test_the_last_byte_is_withheld_until_verified(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    reader = fill.read()
    await fill.write_at(0, DATA)

    assert await read_exactly(reader, len(DATA) - 1) == DATA[:-1]
    last = asyncio.create_task(anext(reader))
    assert await still_waiting(last)

    await fill.verify()
    await fill.finish()

    assert await last == DATA[-1:]
    with pytest.raises(StopAsyncIteration):
        await anext(reader)


async def test_a_range_read_before_the_last_byte_needs_no_verification(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    await fill.write_at(0, DATA)
    got = b"".join([chunk async for chunk in fill.read(100, 200)])
    assert got == DATA[100:200]
    await fill.finish(RuntimeError("test over"))


async def test_out_of_order_extents_join_the_contiguous_prefix(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    seen: list[bytes] = []
    fill.observers.append(lambda view: seen.append(bytes(view)))  # before the first write
    await fill.write_at(2000, DATA[2000:])
    await fill.write_at(500, DATA[500:1000])
    assert fill.contiguous == 0
    assert fill.missing() == [(0, 500), (1000, 2000)]

    await fill.write_at(0, DATA[:500])
    assert fill.contiguous == 1000
    assert fill.missing() == [(1000, 2000)]

    await fill.write_at(1000, DATA[1000:2000])
    assert fill.contiguous == len(DATA)
    assert fill.missing() == []
    reader = fill.read()
    assert await read_exactly(reader, len(DATA) - 1) == DATA[:-1]
    await fill.verify()
    assert b"".join(seen) == DATA  # observers see every byte once, in order
    await fill.finish()
    assert await anext(reader) == DATA[-1:]
    await reader.aclose()


async def test_a_mismatch_fails_verification_and_aborts_readers(tmp_path: Path) -> None:
    wrong = bytes(len(DATA))
    fill = new_fill(tmp_path, digest=Digest.of(DATA))
    reader = fill.read()
    await fill.write_at(0, wrong)
    assert await read_exactly(reader, len(DATA) - 1) == wrong[:-1]
    last = asyncio.create_task(anext(reader))

    with pytest.raises(DigestMismatch):
        await fill.verify()
    await fill.finish(DigestMismatch("test"))

    with pytest.raises(FillFailed):
        await last
    assert not fill.temp.exists()  # nothing of it is left once every user is gone
    with pytest.raises(FillFailed):
        await anext(fill.read())


async def test_a_reader_after_the_fill_ended_fails_cleanly(tmp_path: Path) -> None:
    """Once the last user left, the file is closed exactly once and late readers get FillFailed
    (not EBADF, and never bytes of whatever file reused the descriptor number)."""
    fill = new_fill(tmp_path)
    await fill.write_at(0, DATA)
    await fill.verify()
    await fill.finish()
    assert fill.closed and not fill.temp.exists()  # not committed by anyone: removed

    for _ in range(2):
        with pytest.raises(FillFailed):
            await anext(fill.read())


async def test_a_short_blob_does_not_verify(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    await fill.write_at(0, DATA[:-1])
    with pytest.raises(DigestMismatch):
        await fill.verify()
    await fill.finish(DigestMismatch("short"))


async def test_writes_outside_the_blob_are_refused(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    with pytest.raises(FillFailed):
        await fill.write_at(len(DATA) - 1, b"ab")
    with pytest.raises(FillFailed):
        await fill.write_at(-1, b"a")
    await fill.finish(RuntimeError("test over"))
    with pytest.raises(FillFailed):
        await fill.write_at(0, b"a")


async def test_chunks_are_written_whole_even_when_pwritev_writes_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwritev
    calls = []

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(len(buffers))
        return real(fd, [bytes(buffers[0][:7])], offset)  # at most 7 bytes per call

    monkeypatch.setattr(os, "pwritev", short)
    fill = new_fill(tmp_path)
    chunks = [DATA[:100], b"", DATA[100:101], DATA[101:1000]]
    await fill.write_chunks_at(0, chunks)
    await fill.write_chunks_at(1000, [DATA[1000:]])
    await fill.verify()
    assert (tmp_path / "blob.part").read_bytes() == DATA
    assert len(calls) > len(DATA) // 7


async def test_writeback_starts_every_few_bytes_whatever_the_order_of_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kicks: list[int] = []  # the file's size on disk at each kick
    monkeypatch.setattr(writeback, "EVERY", 1000)
    monkeypatch.setattr(
        writeback, "start_writeback", lambda fd: kicks.append(os.fstat(fd).st_size) or True
    )
    fill = new_fill(tmp_path)
    await fill.write_at(2000, DATA[2000:])  # 560 bytes past the prefix: no kick yet
    assert kicks == []
    await fill.write_at(0, DATA[:600])  # 1160 written
    await fill.write_at(600, DATA[600:2000])  # 1400 more
    assert kicks == [len(DATA), len(DATA)]
    await fill.verify()


async def test_only_a_fill_with_a_budget_and_no_readers_is_paced(tmp_path: Path) -> None:
    class Budget:
        def __init__(self, rate: int) -> None:
            self.rate = rate

        async def spend(self, nbytes: int) -> None:
            pass

    fill = new_fill(tmp_path)
    assert fill.pacer_now() is None  # a client's fill
    fill.pacer = Budget(0)
    assert fill.pacer_now() is None  # no limit configured
    fill.pacer = budget = Budget(1000)
    assert fill.pacer_now() is budget


async def test_bytes_another_writer_put_in_the_file_land_like_written_ones(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    with open(fill.temp, "r+b") as other:  # libtorrent, writing into the fill's file
        other.write(DATA)
    reader = fill.read()

    await fill.land(1000, len(DATA), source="peer")  # past the prefix: nothing to read yet
    waiting = asyncio.create_task(read_exactly(reader, 1000))
    assert await still_waiting(waiting)
    await fill.land(0, 1000, source="peer")
    assert DATA.startswith(await waiting)  # the landed prefix, read back from the file
    assert fill.contiguous == len(DATA) and fill.bytes_from == {"peer": len(DATA)}

    await fill.verify()  # hashed from the file
    with pytest.raises(FillFailed, match="outside"):
        await fill.land(0, len(DATA) + 1, source="peer")


async def test_the_hashing_task_waits_while_a_writer_thread_hashed_ahead(tmp_path: Path) -> None:
    # A writer thread (Fill.store) hashes bytes in order before the loop hears that they landed
    # (Fill.arrived): the hashing task must then wait for the next landing, not spin.
    fill = new_fill(tmp_path)
    passes = 0
    hash_landed = fill._hash_landed

    def counted() -> None:
        nonlocal passes
        passes += 1
        hash_landed()

    fill._hash_landed = counted  # type: ignore[method-assign]
    hashing = asyncio.create_task(fill.hash_while_filling())
    await asyncio.to_thread(fill.store, [DATA[:1000]], 0)
    await asyncio.to_thread(fill.store, [DATA[1000:]], 1000)  # hashed to the end, landed: none
    await fill.arrived(0, 1000, "origin")
    await asyncio.sleep(0.1)

    assert passes <= 3, f"the hashing task ran {passes} passes with nothing to hash"
    await fill.arrived(1000, len(DATA), "origin")
    await fill.verify()
    await fill.finish()
    await hashing  # ends with the fill


async def test_bytes_written_in_order_are_never_read_back(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    read_back = 0
    hash_landed = fill._hash_landed

    def counted() -> None:
        nonlocal read_back
        read_back += 1
        hash_landed()

    fill._hash_landed = counted  # type: ignore[method-assign]
    hashing = asyncio.create_task(fill.hash_while_filling())
    for start in range(0, len(DATA), 500):
        await fill.write_at(start, DATA[start : start + 500])
    await fill.verify()

    assert read_back == 0  # hashed on the way to disk, so no hop to a thread to read it back
    await fill.finish()
    await hashing


@pytest.mark.parametrize("hashed_by", ["the writer", "the read-back"])
async def test_hashed_bytes_are_never_overwritten(tmp_path: Path, hashed_by: str) -> None:
    """A second writer of a range the hash already covers (a widened fetch's range request
    meeting the head, an origin answering two requests differently) must not change the file
    under the digest: the hash would pass on the first bytes and the store keep the second."""
    fill = new_fill(tmp_path)
    if hashed_by == "the writer":
        await fill.write_at(0, DATA)  # in order: hashed on the way to disk
    else:
        await fill.write_at(1000, DATA[1000:])  # out of order: read back once the gap fills
        await fill.write_at(0, DATA[:1000])
        await fill.hash_prefix()
    # Overlapping the hashed bytes, and running past them: only the part past them is written.
    await fill.write_at(500, bytes(1000))
    await fill.write_at(2000, bytes(len(DATA) - 2000))

    await fill.verify()
    assert fill.temp.read_bytes() == DATA


async def test_a_write_that_straddles_the_hash_writes_only_the_new_bytes(tmp_path: Path) -> None:
    fill = new_fill(tmp_path)
    await fill.write_at(0, DATA[:1000])
    # The first 1000 bytes are hashed; of this write only [1000, 1500) is new: in order.
    await fill.write_chunks_at(600, [b"x" * 300, DATA[900:1500]])
    await fill.write_at(1500, DATA[1500:])

    await fill.verify()
    assert fill.temp.read_bytes() == DATA


async def test_a_held_fill_keeps_its_file_open_after_it_ends(tmp_path: Path) -> None:
    """A response holds the fill before its first await; the writer finishing and the last
    reader leaving meanwhile must not close the file it is about to send from."""
    data = b"x" * 1000
    fill = new_fill(tmp_path, data)
    fill.hold()
    await fill.write_at(0, data)
    await fill.verify()
    await fill.finish()

    assert not fill.closed
    chunks = [chunk async for chunk in fill.read()]
    assert b"".join(chunks) == data
    fill.release()
    assert fill.closed
    with pytest.raises(FillFailed, match="closed"):
        fill.hold()
