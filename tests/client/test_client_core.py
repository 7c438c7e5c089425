"""The shared client core: each client loads without the other's HTTP library; shared rules hold."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from memories_provider.client import (
    MemoriesDuplicateError,
    MemoriesNotFoundError,
    MemoriesPagingError,
    core,
    protocol,
)
from memories_provider.client.core import PageCursor, none_left
from memories_provider.client.models import Video, VideoPage

# Installs a meta-path finder that refuses ``blocked`` (and its submodules), then proves the
# block works before importing ``module`` and building its client.
_BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib, sys

    blocked, module, client = sys.argv[1], sys.argv[2], sys.argv[3]

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name == blocked or name.startswith(blocked + "."):
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        importlib.import_module(blocked)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker let {blocked} through")

    loaded = importlib.import_module(module)
    instance = getattr(loaded, client)("k" * 32, base_url="http://127.0.0.1:1/serve/api/v1")
    print(repr(instance))
    assert blocked not in sys.modules, sorted(m for m in sys.modules if m.startswith(blocked))
    """
)


@pytest.mark.parametrize(
    ("blocked", "module", "client"),
    [
        ("requests", "memories_provider.client.aio", "AsyncMemoriesClient"),
        ("aiohttp", "memories_provider.client.sync", "MemoriesClient"),
    ],
)
def test_each_client_imports_without_the_other_http_library(blocked: str, module: str, client: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, blocked, module, client],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{client}(base_url='http://127.0.0.1:1/serve/api/v1'")
    assert "k" * 32 not in done.stdout


def test_the_package_still_exports_both_clients() -> None:
    import memories_provider.client as package
    from memories_provider.client.aio import AsyncMemoriesClient
    from memories_provider.client.sync import MemoriesClient

    assert package.MemoriesClient is MemoriesClient
    assert package.AsyncMemoriesClient is AsyncMemoriesClient
    with pytest.raises(AttributeError, match="NoSuchClient"):
        _ = package.NoSuchClient  # type: ignore[attr-defined]


def test_none_left_only_for_an_empty_listing() -> None:
    def page(n: int, total: int | None) -> VideoPage:
        return VideoPage(current_page=1, page_size=2, total_count=total, videos=[object()] * n)  # type: ignore[list-item]

    assert none_left(page(0, 0))
    assert not none_left(page(0, None))  # no count (data: null, an older shape): nothing proven
    assert not none_left(page(1, 1))
    assert not none_left(page(0, 3))  # counted but not shown (a page past the end): not proven gone


def test_page_cursor_stops_on_the_count_on_a_short_page_and_on_an_empty_one() -> None:
    # Pages of distinct videos: the cursor reads their ids (a page repeating an earlier one is refused).
    counter = iter(range(1, 100))

    def page(n: int, total: int | None) -> VideoPage:
        return _ids_page("".join(str(next(counter) % 10) for _ in range(n)), total)

    counted = PageCursor(2)
    counted.advance(page(2, 3))
    assert counted.next == 2
    counted.advance(page(1, 3))
    assert counted.next is None

    short = PageCursor(2)
    short.advance(page(1, None))
    assert short.next is None

    # An empty page ends the paging; one that says 10 videos match and shows none ends it short
    # of its count, which the cursor now refuses (test_page_cursor_refuses_pages_that_end_short...).
    empty = PageCursor(2)
    with pytest.raises(MemoriesPagingError):
        empty.advance(page(0, 10))
    assert empty.next is None
    nothing = PageCursor(2)
    nothing.advance(page(0, 0))
    assert nothing.next is None


def _ids_page(ids: str, total: int | None) -> VideoPage:
    videos = [Video.from_api({"video_no": f"VI{int(i):018d}", "status": "PARSE"}) for i in ids]
    return VideoPage(current_page=1, page_size=2, total_count=total, videos=videos)


def test_page_cursor_stops_a_service_that_answers_page_1_to_every_page_without_a_count() -> None:
    # Without total_count every page came back full (page 1 again): the cursor asked for the
    # next page for ever. 50 repeats stand for "for ever" here; it must give up on the first.
    cursor = PageCursor(2, scope="team")
    asked = []
    with pytest.raises(MemoriesPagingError) as info:
        for _ in range(50):
            assert cursor.next is not None
            asked.append(cursor.next)
            cursor.advance(_ids_page("12", None))
    assert asked == [1, 2] and cursor.next is None
    err = info.value
    assert (err.endpoint, err.page, err.repeated_page, err.listed, err.total_count) == (
        "list_videos",
        2,
        1,
        2,
        None,
    )
    assert (
        "page 2 of the listing of unique_id 'team' with exactly the videos of page 1 (2, no total_count)"
        in str(err)
    )


def test_page_cursor_refuses_page_1_again_under_the_same_count() -> None:
    # With total_count the cursor stopped once it had counted page 1 twice: part of the listing,
    # taken for all of it.
    cursor = PageCursor(2)
    cursor.advance(_ids_page("12", 3))
    with pytest.raises(
        MemoriesPagingError, match=r"page 2 of the listing with exactly .* of page 1 \(2, total_count 3\)"
    ):
        cursor.advance(_ids_page("12", 3))
    assert cursor.next is None


def test_page_cursor_takes_a_page_pushed_down_whole_for_no_repeat() -> None:
    # Two videos added ahead between the requests push page 1 down whole: its total moved.
    cursor = PageCursor(2)
    cursor.advance(_ids_page("12", 3))
    cursor.advance(_ids_page("12", 5))
    assert cursor.next == 3
    cursor.advance(_ids_page("3", 5))
    assert cursor.next is None and cursor.listed == 5


def test_page_cursor_refuses_pages_that_end_short_of_their_count() -> None:
    cursor = PageCursor(2, scope="s")
    cursor.advance(_ids_page("12", 6))
    with pytest.raises(MemoriesPagingError) as info:
        cursor.advance(_ids_page("", 6))
    assert (info.value.page, info.value.repeated_page, info.value.listed, info.value.total_count) == (
        2,
        None,
        2,
        6,
    )
    assert "the listing of unique_id 's' ended at page 2 after 2 video(s)" in str(info.value)
    assert "counts 6 (total_count)" in str(info.value)
    # A count that fell while the pages were read (videos deleted meanwhile) ends where it says.
    shrunk = PageCursor(2)
    shrunk.advance(_ids_page("12", 3))
    shrunk.advance(_ids_page("", 2))
    assert shrunk.next is None


def test_list_videos_refuses_an_unknown_filter_before_sending() -> None:
    with pytest.raises(TypeError, match="'colour'"):
        protocol.list_videos_request("http://x/serve/api/v1", page=1, size=1, colour="red")  # type: ignore[call-arg]
    spec = protocol.list_videos_request(
        "http://x/serve/api/v1",
        page=1,
        size=5,
        tag="t",
        unique_id="u",
        video_nos=("VI000000000000000001", "VI000000000000000002"),
    )
    assert spec.json_body == {
        "page": 1,
        "size": 5,
        "unique_id": "u",
        "video_nos": ["VI000000000000000001", "VI000000000000000002"],
        "tag": "t",
    }
    assert list(spec.json_body) == ["page", "size", "unique_id", "video_nos", "tag"]


def _delete_faults(memories_emulator) -> list[str]:
    """Batch 1: its answer lost, then 0409 on the retry (deleted); batch 2: 0409 on its first try."""
    control = memories_emulator.control
    control.inject_fault("delete_videos", "drop_before_response", count=1)
    control.inject_fault("delete_videos", "json_error", count=2, code="0409", msg="deleted twice")
    return [f"VI{n:018d}" for n in range(101)]  # two batches of at most 100


def test_sync_delete_takes_0409_as_done_once_a_listing_shows_the_batch_gone(
    client, memories_emulator
) -> None:
    ids = _delete_faults(memories_emulator)
    client.delete_videos(ids)  # 0409 on batch 1's retry and on batch 2's first try: none of them listed
    assert memories_emulator.control.count("delete_videos") == 3
    asked = [r.get("video_nos") for r in memories_emulator.control.request_log("list_videos")]
    assert asked == [ids[:100], ids[100:]]


async def test_async_delete_takes_0409_as_done_once_a_listing_shows_the_batch_gone(
    aclient, memories_emulator
) -> None:
    ids = _delete_faults(memories_emulator)
    await aclient.delete_videos(ids)
    assert memories_emulator.control.count("delete_videos") == 3
    asked = [r.get("video_nos") for r in memories_emulator.control.request_log("list_videos")]
    assert asked == [ids[:100], ids[100:]]


def _answers(*answers):
    """A ``call`` for a plan: each Call answered in turn (an exception is raised), the Calls kept."""
    calls: list[core.Call] = []
    queue = list(answers)

    def call(step: core.Call):
        calls.append(step)
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return call, calls


def _listing(*video_nos: str) -> VideoPage:
    return VideoPage(videos=[], current_page=1, page_size=1, total_count=len(video_nos))


@pytest.mark.parametrize("driver", ["follow", "afollow"])
async def test_both_drivers_run_a_plan_alike(driver: str) -> None:
    """follow and afollow send each result into the plan and throw each error into it: the plan
    handles it (0409, then a listing showing none left: done) or lets it rise (one left)."""

    async def run(plan, call):
        if driver == "follow":
            return core.follow(plan, call)

        async def acall(step):
            return call(step)

        return await core.afollow(plan, acall)

    ids = [f"VI{n:018d}" for n in range(101)]
    duplicate = MemoriesDuplicateError("dup", code="0409")
    call, calls = _answers(None, duplicate, _listing())
    assert await run(core.delete_videos_plan("http://h/serve/api/v1", ids, "u"), call) is None
    assert [c.spec.endpoint for c in calls] == ["delete_videos", "delete_videos", "list_videos"]
    assert calls[2].spec.json_body["video_nos"] == ids[100:]

    call, calls = _answers(duplicate, _listing(ids[0]))
    with pytest.raises(MemoriesDuplicateError) as info:
        await run(core.delete_videos_plan("http://h/serve/api/v1", ids[:1], "u"), call)
    assert info.value is duplicate and len(calls) == 2

    call, _ = _answers(None)
    with pytest.raises(MemoriesNotFoundError, match="video VI000000000000000001 not found"):
        await run(core.get_video_plan("http://h/serve/api/v1", "VI000000000000000001", None), call)


def test_page_cursor_says_when_a_deletion_ahead_may_have_moved_a_video_past_it() -> None:
    # Four videos 1-4, newest first, pages of 2. Video 1 is deleted after page 1 is read: page 2
    # is now [4] (3 moved up onto page 1, already read), and its total dropped from 4 to 3.
    moved = PageCursor(2)
    moved.advance(_ids_page("12", 4))
    assert not moved.may_have_skipped
    moved.advance(_ids_page("4", 3))
    assert moved.next is None and moved.may_have_skipped
    # Videos added ahead only push the others down (3 seen twice): nothing was skipped.
    pushed = PageCursor(2)
    pushed.advance(_ids_page("12", 4))
    pushed.advance(_ids_page("23", 5))
    pushed.advance(_ids_page("4", 5))
    assert pushed.next is None and not pushed.may_have_skipped
    # Without total_count after page 1, nothing tells: it may have.
    blind = PageCursor(2)
    blind.advance(_ids_page("12", None))
    blind.advance(_ids_page("3", None))
    assert blind.next is None and blind.may_have_skipped
    # One page is one answer: nothing can have moved within it.
    one = PageCursor(2)
    one.advance(_ids_page("1", None))
    assert not one.may_have_skipped
