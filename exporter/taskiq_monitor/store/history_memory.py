"""The execution history of the in-process store (the in-memory demo): the same records and pages as in Redis.

Bounded to ``MEMORY_HISTORY_CAP`` executions (it lives in the memory of the process that runs the tasks); queries
filter and sort what it holds, which is cheap at that size. Callers hold the store's lock.
"""

from __future__ import annotations

import heapq
import time

from taskiq_monitor.settings import Settings
from taskiq_monitor.store.history import (
    MAX_ATTEMPT_PROBE,
    STATUS_RANK,
    Execution,
    HistoryPage,
    HistoryQuery,
    encode_cursor,
    encode_member,
    execution,
)
from taskiq_monitor.store.model import StateOp

MEMORY_HISTORY_CAP = 20_000


class MemoryHistory:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # member -> (score, folded task name, status, record): the record is the event's JSON line (the string its
        # stream entry holds too) unless the writer was handed an encoded one.
        self.records: dict[bytes, tuple[int, str, str, bytes | str]] = {}
        # (score, member) of every record, oldest first: a member's score never changes, and records leave only
        # through expire(), so the heap and the records agree. Eviction pops the oldest in O(log n) each; sorting all
        # records instead cost ~12 ms per 2,000 new executions at the cap (~6 µs per task, in the flusher thread).
        self._ages: list[tuple[int, bytes]] = []
        self.evicted = {"age": 0, "count": 0}

    @property
    def cap(self) -> int:
        return min(self.settings.history_max_executions, MEMORY_HISTORY_CAP)

    def record(self, task: str, op: StateOp) -> None:
        member = op.history_member
        old = self.records.get(member)
        if old is not None and STATUS_RANK.get(old[2], 0) > STATUS_RANK.get(op.status, 0):
            return
        score = old[0] if old is not None else op.history_score
        self.records[member] = (score, task, op.status, op.history_record or op.payload)
        if old is None:
            heapq.heappush(self._ages, (score, member))
        cap = self.cap
        if len(self.records) > cap + cap // 10:
            self.expire()

    def expire(self, now: float | None = None) -> tuple[int, int]:
        """Delete by age, then the oldest beyond the cap; returns (by age, by count)."""
        now = time.time() if now is None else now
        cutoff = int((now - self.settings.history_retention_days * 86400) * 1000)
        records, ages = self.records, self._ages
        aged = counted = 0
        while ages and ages[0][0] < cutoff:
            del records[heapq.heappop(ages)[1]]
            aged += 1
        while len(records) > self.cap:
            del records[heapq.heappop(ages)[1]]
            counted += 1
        self.evicted["age"] += aged
        self.evicted["count"] += counted
        return aged, counted

    def page(self, query: HistoryQuery) -> HistoryPage:
        matches: list[tuple[int, bytes]] = []
        for member, (score, task, status, _blob) in self.records.items():
            if query.task_names is not None and task not in query.task_names:
                continue
            if query.statuses is not None and status not in query.statuses:
                continue
            if query.since_ms is not None and score < query.since_ms:
                continue
            if query.until_ms is not None and score > query.until_ms:
                continue
            if query.cursor is not None and (score, member) >= query.cursor:
                continue
            matches.append((score, member))
        matches.sort(reverse=True)
        chosen = matches[: query.limit]
        executions = [execution(m, self.records[m][3], s) for s, m in chosen]
        more = len(matches) > query.limit
        return HistoryPage(executions, encode_cursor(*chosen[-1]) if more and chosen else None)

    def attempts(self, task_id: str) -> list[Execution]:
        out: list[Execution] = []
        attempt = 1
        while True:
            found = False
            for a in range(attempt, attempt + MAX_ATTEMPT_PROBE):
                member = encode_member(task_id, a)
                rec = self.records.get(member)
                if rec is not None:
                    out.append(execution(member, rec[3], rec[0]))
                    found = a == attempt + MAX_ATTEMPT_PROBE - 1
            if not found:
                return out
            attempt += MAX_ATTEMPT_PROBE
