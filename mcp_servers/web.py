"""Web search through a SearxNG instance (its JSON API) and page fetching, over MCP.

The fetcher refuses addresses that are not public (private, loopback, link-local, multicast,
reserved: server-side request forgery) unless `--allow-private` is given, checks every redirect
hop the same way, and caps the size and the time of each fetch. The SearxNG URL itself is the
operator's choice and is not checked.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
from mcp.server.fastmcp import FastMCP

from memento.mcp_servers._run import add_transport_options, run_server
from memento.mcp_servers.documents import cap, html_to_markdown, html_to_text, parse

USER_AGENT = "memento-web/0.1 (+https://github.com/; MCP fetch tool)"


@dataclass
class WebSettings:
    searxng_url: str = ""
    allow_private: bool = False
    max_bytes: int = 2_000_000
    timeout_s: float = 20.0
    max_redirects: int = 5


settings = WebSettings(searxng_url=os.environ.get("MEMENTO_SEARXNG_URL", ""))
server = FastMCP("memento-web", log_level="WARNING",
                 instructions="Search the web (SearxNG) and fetch pages as clean markdown or text.")


class FetchRefused(PermissionError):
    pass


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _public(address: str) -> bool:
    """Whether an address is a public unicast one, looking through IPv6 forms that carry an
    IPv4 address (mapped, NAT64, 6to4, Teredo), which could otherwise smuggle a private one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not _public(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


async def check_url(url: str) -> None:
    """Refuse URLs that are not http(s), or whose host resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"{url}: only http and https URLs are fetched")
    if not parts.hostname:
        raise FetchRefused(f"{url}: no host name")
    if settings.allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await anyio.to_thread.run_sync(socket.getaddrinfo, parts.hostname, port)
    except socket.gaierror as exc:
        raise FetchRefused(f"{url}: cannot resolve {parts.hostname} ({exc.strerror})") from None
    for *_, sockaddr in infos:
        if not _public(sockaddr[0]):
            raise FetchRefused(f"{url}: {parts.hostname} resolves to {sockaddr[0]}, a private, loopback or "
                               "link-local address; refused (the server's --allow-private permits it)")


async def _get(url: str) -> tuple[str, str, bytes, bool]:
    """(final url, content type, body, truncated), following and checking each redirect."""
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=settings.timeout_s,
                                 headers={"User-Agent": USER_AGENT}) as client:
        current = url
        for _ in range(settings.max_redirects + 1):
            await check_url(current)
            async with client.stream("GET", current) as response:
                if response.is_redirect and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                if response.status_code >= 400:
                    raise ValueError(f"{current} answered HTTP {response.status_code}")
                body, truncated = bytearray(), False
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > settings.max_bytes:
                        del body[settings.max_bytes:]
                        truncated = True
                        break
                return current, response.headers.get("content-type", ""), bytes(body), truncated
        raise ValueError(f"{url}: more than {settings.max_redirects} redirects")


@server.tool()
async def fetch_page(url: str, format: str = "markdown", max_chars: int = 20_000) -> str:
    """Fetch a web page as clean markdown (default) or plain text. PDFs and other documents are converted too."""
    if format not in ("markdown", "text"):
        raise ValueError("format must be markdown or text")
    try:
        with anyio.fail_after(settings.timeout_s * 2):
            final, content_type, body, truncated = await _get(url)
    except TimeoutError:
        raise TimeoutError(f"{url}: no complete answer within {settings.timeout_s * 2:g} s") from None
    except httpx.HTTPError as exc:
        raise ValueError(f"{url}: {type(exc).__name__}: {exc}") from None
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml") or (not kind and body.lstrip()[:1] == b"<"):
        html = body.decode("utf-8", errors="replace")
        text = html_to_text(html) if format == "text" else html_to_markdown(html)
    else:
        suffix = {"application/pdf": ".pdf", "application/json": ".json", "text/csv": ".csv"}.get(kind, ".txt")
        text = await parse(f"page{suffix}", body)  # in a parser worker, under its limits
    header = f"URL: {final}\n" + (f"[body cut at {settings.max_bytes} bytes]\n" if truncated else "")
    return cap(header + "\n" + text, max_chars)


@server.tool()
async def web_search(query: str, max_results: int = 8) -> str:
    """Search the web through the configured SearxNG instance; returns titles, URLs and snippets."""
    if not settings.searxng_url:
        raise ValueError("no search engine configured: start the web server with --searxng-url "
                         "(or MEMENTO_SEARXNG_URL) pointing at a SearxNG instance with JSON output enabled")
    endpoint = settings.searxng_url.rstrip("/") + "/search"
    try:
        async with httpx.AsyncClient(timeout=settings.timeout_s, trust_env=False) as client:
            response = await client.get(endpoint, params={"q": query, "format": "json"},
                                        headers={"User-Agent": USER_AGENT})
    except httpx.HTTPError as exc:
        raise ValueError(f"search engine at {settings.searxng_url} unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ValueError(f"search engine answered HTTP {response.status_code} (is format=json enabled in SearxNG?)")
    try:
        results = response.json().get("results", [])
    except ValueError:
        raise ValueError("search engine did not answer JSON: enable the json format in SearxNG settings") from None
    lines = [f"{n}. [{r.get('title') or r.get('url')}]({r.get('url')})\n   {' '.join(str(r.get('content', '')).split())}"
             for n, r in enumerate(results[:max(1, min(max_results, 20))], 1)]
    return "\n".join(lines) or f"no results for {query!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--searxng-url", default=settings.searxng_url, help="base URL of a SearxNG instance")
    parser.add_argument("--allow-private", action="store_true",
                        help="allow fetching private, loopback and link-local addresses (off: SSRF protection)")
    parser.add_argument("--max-bytes", type=int, default=settings.max_bytes, help="largest body read per fetch")
    parser.add_argument("--timeout", type=float, default=settings.timeout_s, help="seconds per request")
    add_transport_options(parser)
    args = parser.parse_args()
    settings.searxng_url, settings.allow_private = args.searxng_url, args.allow_private
    settings.max_bytes, settings.timeout_s = args.max_bytes, args.timeout
    run_server(server, args)


if __name__ == "__main__":
    main()
