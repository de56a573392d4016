"""What can go wrong in a prewarm, each with the exit code ``imgaccel prewarm`` ends with.

PrewarmError (1)
├── UnknownImage      3  the registry has no such repository, tag or digest
├── Denied            4  the registry refused the credentials (or none were given)
├── CacheFullError    5  the node's cache cannot keep the image: its quota (pinned or busy
│                        blobs), or its disk's floor (cache.min_free_percent)
├── NodeUnreachable   6  the node daemon (or the tracker) did not answer
├── JobFailed         7  a cluster job ended with failed nodes, or --wait found no node for it
├── JobCancelled      7  a cluster job was cancelled (or expired) before every node was done
└── WaitTimedOut      8  --wait gave up after --timeout; the job itself goes on
"""

from __future__ import annotations

from imgaccel.errors import ImgaccelError


class PrewarmError(ImgaccelError):
    exit_code = 1


class UnknownImage(PrewarmError):
    exit_code = 3


class Denied(PrewarmError):
    exit_code = 4


class CacheFullError(PrewarmError):
    exit_code = 5


class NodeUnreachable(PrewarmError):
    exit_code = 6


class JobFailed(PrewarmError):
    exit_code = 7


class JobCancelled(PrewarmError):
    exit_code = 7


class WaitTimedOut(PrewarmError, TimeoutError):
    exit_code = 8


EXIT_CODES_HELP = (
    "Exit codes: 0 every image warmed; 1 other error; 2 usage; 3 unknown image; "
    "4 denied (credentials missing or refused); 5 cache full; 6 node or tracker unreachable; "
    "7 cluster job failed, was cancelled or expired, or targets no node; "
    "8 --wait timed out (the job goes on)."
)
