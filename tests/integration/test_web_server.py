"""The web server over stdio against a local HTTP server on loopback, plus the SSRF checks."""

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from memento.mcp_servers import web
from tests.integration.conftest import call, stdio

PAGE = ("<html><head><title>T</title><script>steal()</script></head><body><h1>Case memory</h1>"
        "<p>Memento learns from <a href='/x'>cases</a>.</p></body></html>")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body, kind="text/html", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/page":
            self._send(200, PAGE.encode())
        elif url.path == "/redirect":
            self._send(302, b"", headers={"Location": "/page"})
        elif url.path == "/loop":
            self._send(302, b"", headers={"Location": "/loop"})
        elif url.path == "/big":
            self._send(200, b"A" * 3_000_000, kind="text/plain")
        elif url.path == "/missing":
            self._send(404, b"no")
        elif url.path == "/search":
            query = parse_qs(url.query)
            assert query["format"] == ["json"]
            results = [{"title": f"Result {i} for {query['q'][0]}", "url": f"https://example.org/{i}",
                        "content": f"snippet {i}"} for i in range(12)]
            self._send(200, json.dumps({"query": query["q"][0], "results": results}).encode(), "application/json")
        else:
            self._send(404, b"")


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def trusting(toolbox_for, site):
    """A test configuration that allows loopback fetches."""
    return toolbox_for({"web": stdio("memento.mcp_servers.web", "--allow-private", "--searxng-url", site,
                                     "--max-bytes", "100000")})


@pytest.fixture
def default_web(toolbox_for, site):
    return toolbox_for({"web": stdio("memento.mcp_servers.web", "--searxng-url", site)})


def test_fetch_page_as_markdown_and_text(trusting, site):
    out = call(trusting, "fetch_page", url=f"{site}/page")
    assert out.status == "success" and "# Case memory" in out.text and "[cases](/x)" in out.text
    assert "steal" not in out.text
    text = call(trusting, "fetch_page", url=f"{site}/page", format="text")
    assert "Memento learns from\ncases" in text.text and "](" not in text.text


def test_redirects_are_followed_and_bounded(trusting, site):
    out = call(trusting, "fetch_page", url=f"{site}/redirect")
    assert out.status == "success" and f"URL: {site}/page" in out.text
    loop = call(trusting, "fetch_page", url=f"{site}/loop")
    assert loop.status == "error" and "more than 5 redirects" in loop.text


def test_size_is_capped_and_errors_are_clear(trusting, site):
    big = call(trusting, "fetch_page", url=f"{site}/big", max_chars=500)
    assert "[body cut at 100000 bytes]" in big.text and "[truncated" in big.text
    missing = call(trusting, "fetch_page", url=f"{site}/missing")
    assert missing.status == "error" and "HTTP 404" in missing.text
    scheme = call(trusting, "fetch_page", url="file:///etc/passwd")
    assert scheme.status == "error" and "only http and https" in scheme.text


def test_search_through_a_searxng_json_endpoint(trusting):
    out = call(trusting, "web_search", query="case based reasoning", max_results=3)
    assert out.status == "success"
    assert out.text.splitlines()[0] == "1. [Result 0 for case based reasoning](https://example.org/0)"
    assert "3. [Result 2" in out.text and "4. [" not in out.text


def test_default_configuration_refuses_private_addresses(default_web, site):
    for url in (f"{site}/page", "http://localhost/", "http://[::1]/", "http://169.254.169.254/latest/meta-data/",
                "http://10.1.2.3/", "http://0.0.0.0/"):
        out = call(default_web, "fetch_page", url=url)
        assert out.status == "error" and "refused" in out.text, url
    # Search goes to the configured engine, which the operator chose: it is not SSRF-checked.
    assert call(default_web, "web_search", query="x").status == "success"


def test_search_without_an_engine_is_a_clear_error(toolbox_for):
    box = toolbox_for({"web": stdio("memento.mcp_servers.web")})
    out = call(box, "web_search", query="x")
    assert out.status == "error" and "--searxng-url" in out.text


@pytest.mark.parametrize("address,public", [
    ("93.184.216.34", True), ("2606:4700::1111", True), ("10.0.0.1", False), ("127.0.0.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("::1", False), ("fe80::1%eth0", False), ("fd00::1", False),
    ("::ffff:127.0.0.1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::a00:1", False),
    ("2002:a00:1::", False), ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False), ("224.0.0.1", False),
])
def test_address_classification(address, public):
    assert web._public(address) is public


def test_every_redirect_hop_is_checked(monkeypatch):
    """A public page that redirects to a private address is refused at the hop."""
    addresses = {"public.example": "93.184.216.34", "internal.example": "10.0.0.5"}
    monkeypatch.setattr(web.socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (addresses[host], port))])
    seen = []

    def respond(request):
        seen.append(request.url.host)
        if request.url.host == "public.example":
            return httpx.Response(302, headers={"Location": "http://internal.example/admin"})
        return httpx.Response(200, text="secret admin page")

    real_client = httpx.AsyncClient
    monkeypatch.setattr(web.httpx, "AsyncClient",
                        lambda **kw: real_client(transport=httpx.MockTransport(respond), **kw))
    monkeypatch.setattr(web.settings, "allow_private", False)
    with pytest.raises(web.FetchRefused, match="internal.example resolves to 10.0.0.5"):
        asyncio.run(web._get("http://public.example/start"))
    assert seen == ["public.example"]  # the private hop was never requested
