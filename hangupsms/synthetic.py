"""Generated AMI traffic for load tests: many concurrent copies of the recorded real calls.

Each synthetic call is one recorded transcript with every identity rewritten consistently:
Uniqueids and Linkedids (in every header that carries them), the `-0000002a` sequence of
channel names (wherever a channel name appears: Channel, DestChannel, Peer, VarSet values…),
bridge UUIDs, and every time (`Timestamp`, CEL `EventTime`, Cdr `StartTime`/`AnswerTime`/
`EndTime`) shifted to the call's start. `concurrency` calls run at once: each of that many
slots plays calls back to back, and the events of all slots are merged by time, so events
stay in their recorded order within a call and the stream's timestamps only move forward.
Optionally, the lab's GB drama-range numbers (07700 900xxx) become distinct per call.

The stream is lazy: only the calls in progress are held, so millions of calls cost O(concurrency)
memory. `SyntheticCall.template` says which transcript a call copies, so a caller can check
that it yields the same facts and messages as the recording.
"""

from __future__ import annotations

import calendar
import functools
import heapq
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from hangupsms.frames import Frame, decode_frame, read_transcript

# The recording client's own frames, not part of a call: its connection's FullyBooted and the
# answer to its Originate (a real PBX's calls come from trunks, not from Originate).
RECORDING_ARTEFACTS = frozenset({"FullyBooted", "OriginateResponse"})
_TIME_HEADERS = frozenset({"EventTime", "StartTime", "AnswerTime", "EndTime"})
_CLOCK_FORMAT = "%Y-%m-%d %H:%M:%S"  # Asterisk's CEL/CDR times: UTC in the lab, no zone
_UID = re.compile(r"\d+\.\d+")
_CHANNEL_SEQUENCE = re.compile(r"-([0-9a-f]{8})(?:;[12])?$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Ofcom's drama range, national (0…) or E.164 (+44…): the only customer numbers distinct_numbers
# rewrites, so a generated number can never be a real subscriber's.
_DRAMA = re.compile(r"(?:(?<=\+44)|(?<=0))7700900(\d{3})(?!\d)")
_DRAMA_RANGE = 1000
_WHOLE_SLOT = re.compile(r"\{(\d+)\}")

FrameFilter = Callable[[Frame], bool]


@dataclass(frozen=True, slots=True)
class _TemplateFrame:
    """One event frame as str.format patterns: the call's values first, then the frame's times."""

    text: str  # the whole frame, CRLF lines and the blank line
    fixed: dict[str, str]  # headers (named as Frame.as_dict names them) all copies share
    slotted: tuple[tuple[str, int], ...]  # (name, argument) of headers that are one value
    varying: tuple[tuple[str, str], ...]  # (name, value) patterns of the other changed headers
    at: float  # when it came (its Timestamp; the previous frame's when it has none)
    timestamps: tuple[float, ...]  # its recorded `Timestamp`
    clocks: tuple[int, ...]  # its recorded `EventTime`-like values (epoch seconds; -1: empty)


@dataclass(frozen=True, slots=True)
class CallTemplate:
    """A recorded call compiled for copying: its frames and the identities to rewrite."""

    name: str
    linkedid: str
    uids: tuple[str, ...]  # in creation order (the Asterisk counter after the dot)
    channels: tuple[str, ...]  # channel-name sequences (8 hex digits), in order
    bridges: tuple[str, ...]
    numbers: tuple[str, ...]  # drama-range tails (3 digits) when numbers are rewritten
    frames: tuple[_TemplateFrame, ...]
    started_at: float
    duration: float


@dataclass(frozen=True, slots=True)
class SyntheticCall:
    """One generated call: which transcript it copies and the identities it was given."""

    index: int
    template: str  # the transcript's name (file stem)
    linkedid: str
    start: float  # epoch seconds of its first event
    values: tuple[str, ...] = field(repr=False)  # the template's uids, channels, bridges, numbers
    numbers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def rewrite(self, text: str) -> str:
        """`text` with the transcript's drama-range numbers replaced as in this call's events."""
        if not self.numbers:
            return text
        return _DRAMA.sub(lambda m: "7700900" + self.numbers.get(m[1], m[1]), text)


def packaged_transcripts() -> list[Path]:
    """The recordings shipped in `hangupsms/demo`, in a stable order."""
    return sorted(Path(str(resources.files("hangupsms") / "demo")).glob("*.ami"))


def load_template(path: Path, *, distinct_numbers: bool = False,
                  keep: FrameFilter | None = None) -> CallTemplate:
    """Compile one single-call transcript; `keep` drops frames (an AMI `eventfilter`)."""
    frames = [frame for raw in read_transcript(path)[1]
              if (frame := decode_frame(raw)).first("Event") not in (None, *RECORDING_ARTEFACTS)]
    linkedids = {v for f in frames for k, v in f.headers if k.lower() == "linkedid" and v}
    if len(linkedids) != 1:
        raise ValueError(f"{path.name}: a template must hold exactly one call, not {linkedids}")
    uids = sorted({v for f in frames for k, v in f.headers
                   if k.lower().endswith(("uniqueid", "linkedid")) and _UID.fullmatch(v)},
                  key=lambda uid: int(uid.split(".")[1]))
    channels = sorted({m[1] for f in frames for k, v in f.headers
                       if k.endswith("Channel") or k == "Peer"
                       if (m := _CHANNEL_SEQUENCE.search(v))}, key=lambda seq: int(seq, 16))
    texts = ["\n".join(f"{k}: {v}" for k, v in f.headers) for f in frames]
    bridges = sorted({u for text in texts for u in _UUID.findall(text)})
    numbers = sorted({t for text in texts for t in _DRAMA.findall(text)} if distinct_numbers
                     else ())
    patterns = _Patterns(uids, channels, bridges, numbers)
    kept = [f for f in frames if keep is None or keep(f)]
    times = [float(v) for f in frames for k, v in f.headers if k == "Timestamp"]
    compiled: list[_TemplateFrame] = []
    for frame in kept:
        compiled.append(_compile(frame, patterns, compiled[-1].at if compiled else times[0]))
    return CallTemplate(path.stem, linkedids.pop(), tuple(uids), tuple(channels),
                        tuple(bridges), tuple(numbers), tuple(compiled), times[0],
                        times[-1] - times[0])


@functools.lru_cache(maxsize=64)
def _cached_template(path: Path, mtime_ns: int, distinct_numbers: bool,
                     keep: FrameFilter | None) -> CallTemplate:
    """Compiling costs ~25 ms per transcript: done once per file version and options."""
    return load_template(path, distinct_numbers=distinct_numbers, keep=keep)


class _Patterns:
    """Turns text into str.format patterns: each identity becomes its slot, braces escaped."""

    def __init__(self, uids: Sequence[str], channels: Sequence[str], bridges: Sequence[str],
                 numbers: Sequence[str]) -> None:
        def either(items: Sequence[str]) -> str:
            # Longest first, so `1796413068.1` never matches the start of `1796413068.10`.
            return "|".join(re.escape(t) for t in sorted(items, key=len, reverse=True)) or "(?!)"
        self._tokens = re.compile(
            f"(?P<bridge>{either(bridges)})"
            f"|(?<![\\d.])(?P<uid>{either(uids)})(?![\\d])"
            f"|(?<=-)(?P<channel>{either(channels)})(?![0-9a-f])"
            f"|(?:(?<=\\+44)|(?<=0))7700900(?P<number>{either(numbers)})(?!\\d)"
        )
        self.slots = {token: index
                      for index, token in enumerate((*uids, *channels, *bridges, *numbers))}
        self._memo: dict[str, str] = {}  # most values repeat across a call's frames

    def __call__(self, text: str) -> str:
        pattern = self._memo.get(text)
        if pattern is None:
            pattern = self._memo[text] = self._pattern(text)
        return pattern

    def varies(self, text: str) -> bool:
        """True when `text` holds an identity (its pattern differs from the escaped text)."""
        return self(text) != _escape(text)

    def _pattern(self, text: str) -> str:
        out: list[str] = []
        position = 0
        for match in self._tokens.finditer(text):
            group = match.lastgroup or ""
            # The drama-number alternative matches its fixed `7700900` prefix too: keep it.
            out.append(_escape(text[position:match.start(group)]))
            out.append(f"{{{self.slots[match[group]]}}}")
            position = match.end()
        out.append(_escape(text[position:]))
        return "".join(out)


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _compile(frame: Frame, patterns: _Patterns, at: float) -> _TemplateFrame:
    """Patterns for one frame; `at` is used when the frame has no Timestamp."""
    base = len(patterns.slots)
    first_clock = base + sum(1 for key, _ in frame.headers if key == "Timestamp")
    timestamps: list[float] = []
    clocks: list[int] = []
    times: dict[str, str] = {}  # header -> its placeholder (the first, as as_dict keeps)
    lines: list[str] = []
    for key, value in frame.headers:
        if key == "Timestamp":
            placeholder = f"{{{base + len(timestamps)}}}"
            timestamps.append(float(value))
        elif key in _TIME_HEADERS:
            placeholder = f"{{{first_clock + len(clocks)}}}"
            clocks.append(_parse_clock(value))
        else:
            lines.append(f"{patterns(key)}: {patterns(value)}")
            continue
        times.setdefault(key, placeholder)
        lines.append(f"{key}: {placeholder}")
    fixed: dict[str, str] = {}
    slotted: list[tuple[str, int]] = []
    varying: list[tuple[str, str]] = []
    for key, value in frame.as_dict().items():
        pattern = times.get(key) or patterns(value)
        if patterns.varies(key):  # an identity in a header name: never recorded, handled
            varying.append((patterns(key), pattern))
        elif whole := _WHOLE_SLOT.fullmatch(pattern):
            slotted.append((key, int(whole[1])))
        elif key in times or patterns.varies(value):
            varying.append((_escape(key), pattern))
        else:
            fixed[key] = value
    return _TemplateFrame("\r\n".join(lines) + "\r\n\r\n", fixed, tuple(slotted),
                          tuple(varying), timestamps[0] if timestamps else at,
                          tuple(timestamps), tuple(clocks))


def _parse_clock(value: str) -> int:
    """Epoch seconds of a CEL/CDR time, -1 for an empty one (an AnswerTime never answered)."""
    return calendar.timegm(time.strptime(value, _CLOCK_FORMAT)) if value else -1


DEFAULT_START = 1796637600.0  # Monday 2026-12-07 10:00 UTC: inside any office-hours rule


class SyntheticTraffic:
    """`n_calls` copies of `transcripts` (chosen at random, reproducibly from `seed`).

    `concurrency` calls are in progress at any time; each slot waits up to `max_gap`
    seconds between its calls. `keep` drops frames before anything is generated, as a
    manager.conf `eventfilter` would. Iterate `frames()` (or `timed_frames()`) for the
    stream and `calls()` for what it holds; both are reproducible and may be repeated.
    """

    def __init__(self, n_calls: int, *, concurrency: int, seed: int,
                 transcripts: Sequence[Path] | None = None, distinct_numbers: bool = False,
                 keep: FrameFilter | None = None, start: float = DEFAULT_START,
                 max_gap: float = 0.5) -> None:
        if n_calls < 0 or concurrency < 1:
            raise ValueError("n_calls must be >= 0 and concurrency >= 1")
        paths = list(transcripts) if transcripts is not None else packaged_transcripts()
        if not paths:
            raise ValueError("no transcripts to copy")
        self.templates = tuple(
            _cached_template(path, path.stat().st_mtime_ns, distinct_numbers, keep)
            for path in paths
        )
        self.n_calls = n_calls
        self.concurrency = concurrency
        self.seed = seed
        self.start = start
        self.max_gap = max_gap

    def calls(self) -> Iterator[SyntheticCall]:
        """The generated calls, in the order their slots took them (about their start order)."""
        for _, _, call in self._plan():
            yield call

    def sources(self) -> dict[str, str]:
        """Linkedid -> the name of the transcript that call copies."""
        return {call.linkedid: call.template for call in self.calls()}

    def frames(self) -> Iterator[bytes]:
        """The AMI stream: one `Event:` frame per item, CRLF lines, ending in a blank line."""
        for _, frame in self.timed_frames():
            yield frame

    def timed_frames(self) -> Iterator[tuple[float, bytes]]:
        """(the frame's Timestamp, the frame), in time order across all calls."""
        for at, cursor in self._merged():
            yield at, cursor.render()

    def timed_headers(self) -> Iterator[tuple[float, dict[str, str]]]:
        """The same events as `timed_frames`, as `Frame.as_dict()` would decode them.

        Skips the wire format and the parser: for benchmarks of the pure stages alone.
        """
        for at, cursor in self._merged():
            yield at, cursor.headers()

    def _merged(self) -> Iterator[tuple[float, _Cursor]]:
        """Every call's next event in time order; the cursor is valid until the next item."""
        plans = self._plan()
        pending = next(plans, None)
        heap: list[tuple[float, int, _Cursor]] = []
        order = 0  # ties keep the order in which calls were started
        while heap or pending is not None:
            # A call not started yet begins at or after its slot's free time: activate every
            # call that could have an event before the earliest event of those running.
            while pending is not None and (not heap or pending[0] <= heap[0][0]):
                _, template, call = pending
                if template.frames:
                    cursor = _Cursor(template, call)
                    heapq.heappush(heap, (cursor.at, order, cursor))
                    order += 1
                pending = next(plans, None)
            if not heap:
                continue
            at, _, cursor = heapq.heappop(heap)
            yield at, cursor
            if cursor.advance():
                heapq.heappush(heap, (cursor.at, order, cursor))
                order += 1

    def _plan(self) -> Iterator[tuple[float, CallTemplate, SyntheticCall]]:
        """(when the call's slot became free, its template, the call), slots earliest free first."""
        rng = random.Random(self.seed)  # noqa: S311 - reproducible test traffic, not secrets
        period = sum(t.duration for t in self.templates) / len(self.templates) + self.max_gap
        free = [(self.start + rng.uniform(0.0, period), slot) for slot in range(self.concurrency)]
        heapq.heapify(free)
        counters = [1, 1, 0]  # Asterisk's uniqueid counter, channel sequence, drama number
        for index in range(self.n_calls):
            at, slot = heapq.heappop(free)
            template = rng.choice(self.templates)
            begin = at + rng.uniform(0.0, self.max_gap)
            call = _new_call(index, template, begin, counters, rng)
            heapq.heappush(free, (begin + template.duration, slot))
            yield at, template, call


def _new_call(index: int, template: CallTemplate, begin: float, counters: list[int],
              rng: random.Random) -> SyntheticCall:
    """The identities of one copy of `template`; `counters` advance as Asterisk's would."""
    # A Uniqueid is `<creation second>.<counter>`; the recorded call's sub-second start
    # stands in for each channel's.
    shift = begin - template.started_at + template.started_at % 1.0
    uids = [f"{int(int(uid.split('.')[0]) + shift)}.{counters[0] + rank}"
            for rank, uid in enumerate(template.uids)]
    channels = [f"{(counters[1] + rank) & 0xFFFFFFFF:08x}"
                for rank in range(len(template.channels))]
    bridges = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in template.bridges]
    numbers = [f"{(counters[2] + rank) % _DRAMA_RANGE:03d}"
               for rank in range(len(template.numbers))]
    counters[0] += len(uids)
    counters[1] += len(channels)
    counters[2] += len(numbers)
    return SyntheticCall(
        index=index, template=template.name,
        linkedid=uids[template.uids.index(template.linkedid)], start=begin,
        values=(*uids, *channels, *bridges, *numbers),
        numbers=MappingProxyType(dict(zip(template.numbers, numbers, strict=True))),
    )


class _Cursor:
    """The next frame of one call in progress; `at` is when it comes."""

    __slots__ = ("_frames", "_index", "_shift", "_values", "at")

    def __init__(self, template: CallTemplate, call: SyntheticCall) -> None:
        self._frames = template.frames
        self._index = 0
        self._shift = call.start - template.started_at
        self._values = call.values
        self.at = self._frames[0].at + self._shift

    def advance(self) -> bool:
        """Move to the next frame; False when the call has none left."""
        self._index += 1
        if self._index == len(self._frames):
            return False
        self.at = self._frames[self._index].at + self._shift
        return True

    def _arguments(self, frame: _TemplateFrame) -> tuple[str, ...]:
        shift = self._shift
        if len(frame.timestamps) == 1 and not frame.clocks:  # most frames: no list building
            return (*self._values, f"{frame.timestamps[0] + shift:.6f}")
        stamps = [f"{t + shift:.6f}" for t in frame.timestamps]
        clocks = [_clock_text(int(c + shift)) if c >= 0 else "" for c in frame.clocks]
        return (*self._values, *stamps, *clocks)

    def render(self) -> bytes:
        frame = self._frames[self._index]
        return frame.text.format(*self._arguments(frame)).encode("utf-8")

    def headers(self) -> dict[str, str]:
        frame = self._frames[self._index]
        arguments = self._arguments(frame)
        headers = frame.fixed.copy()
        for key, slot in frame.slotted:
            headers[key] = arguments[slot]
        for key, value in frame.varying:
            headers[key.format(*arguments)] = value.format(*arguments)
        return headers


_CLOCKS: dict[int, str] = {}


def _clock_text(epoch: int) -> str:
    """`2026-12-07 08:20:00` for an epoch second; many events share one, so it is cached."""
    text = _CLOCKS.get(epoch)
    if text is None:
        if len(_CLOCKS) > 4096:
            _CLOCKS.clear()
        text = _CLOCKS[epoch] = time.strftime(_CLOCK_FORMAT, time.gmtime(epoch))
    return text


def synthetic_stream(n_calls: int, *, concurrency: int, seed: int,
                     transcripts: Sequence[Path] | None = None,
                     distinct_numbers: bool = False) -> Iterator[bytes]:
    """The frames of `SyntheticTraffic(...)`: raw AMI `Event:` frames, no banner."""
    return SyntheticTraffic(n_calls, concurrency=concurrency, seed=seed, transcripts=transcripts,
                            distinct_numbers=distinct_numbers).frames()


def keep_events(names: Iterable[str]) -> FrameFilter:
    """A `keep` filter passing only the events named (what an `eventfilter` whitelist does)."""
    wanted = frozenset(names)
    return lambda frame: frame.first("Event") in wanted

