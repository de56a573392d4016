"""The tracker's prewarm-job and hot-layer API, as the CLI and the node's prefetch worker use it.

Imports nothing of the tracker's server side (see ``imgaccel.tracker.jobs`` and
``imgaccel.tracker.hot`` for the API).
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from imgaccel.prewarm.errors import NodeUnreachable, PrewarmError


class JobsClient:
    """Calls to the tracker at ``base_url`` (pass ``ssl_context`` with the cluster cert)."""

    def __init__(
        self,
        base_url: str,
        http: aiohttp.ClientSession,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def create(
        self,
        images: list[str],
        *,
        platform: str | None = None,
        all_platforms: bool = False,
        nodes: dict[str, str] | None = None,
        percent: int = 100,
        expires_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Create a job; ``expires_seconds`` None takes the tracker's default, 0 is never."""
        payload: dict[str, Any] = {
            "images": images,
            "all_platforms": all_platforms,
            "nodes": nodes or {},
            "percent": percent,
        }
        if platform:
            payload["platform"] = platform
        if expires_seconds is not None:
            payload["expires_seconds"] = expires_seconds
        return await self._call("POST", "/v1/jobs", json=payload)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: no node is handed it any more and nodes running it stop."""
        return await self._call("DELETE", f"/v1/jobs/{job_id}")

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def jobs(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/v1/jobs"))["jobs"])

    async def poll(
        self, node: str, labels: dict[str, str], wait: float = 0.0
    ) -> list[dict[str, Any]]:
        """The jobs this node should run (long-polling up to ``wait`` seconds)."""
        params = [("node", node), ("wait", str(wait))]
        params += [("label", f"{k}={v}") for k, v in sorted(labels.items())]
        timeout = aiohttp.ClientTimeout(total=wait + 30)
        body = await self._call("GET", "/v1/nodes/jobs", params=params, timeout=timeout)
        return list(body["jobs"])

    async def progress(
        self, job_id: str, node: str, state: str, done: int, total: int, error: str | None = None
    ) -> bool:
        """Report this node's progress; True while the job stands, False once it was cancelled."""
        payload = {
            "node": node,
            "state": state,
            "bytes_done": done,
            "bytes_total": total,
            "error": error,
        }
        reply = await self._call("POST", f"/v1/jobs/{job_id}/progress", json=payload)
        return not reply.get("cancelled")

    async def report_pulls(self, node: str, pulls: list[dict[str, Any]]) -> None:
        await self._call("POST", "/v1/pulls", json={"node": node, "pulls": pulls})

    async def hot(self, min_score: float, limit: int = 100) -> list[dict[str, Any]]:
        params = {"min_score": str(min_score), "limit": str(limit)}
        return list((await self._call("GET", "/v1/hot", params=params))["layers"])

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            async with self._http.request(method, url, ssl=self._ssl, **kwargs) as response:
                if response.status == 404:
                    raise PrewarmError(f"tracker {method} {path}: not found")
                if response.status >= 300:
                    text = (await response.text())[:300]
                    raise PrewarmError(f"tracker {method} {path}: {response.status} {text}")
                value = await response.json()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise NodeUnreachable(f"tracker {self.base_url} unreachable: {exc}") from exc
        if not isinstance(value, dict):
            raise PrewarmError(f"tracker {method} {path}: not a JSON object")
        return value
