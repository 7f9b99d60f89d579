"""The media server over stdio: a clear error without endpoints, and real requests to an
OpenAI-compatible endpoint (a stand-in on loopback: no hosted model can run here)."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.conftest import call, stdio

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class Endpoint(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Endpoint.requests.append((self.path, self.headers.get("Content-Type", ""), body))
        if self.path.endswith("/chat/completions"):
            request = json.loads(body)
            parts = request["messages"][0]["content"]
            question = next(p["text"] for p in parts if p["type"] == "text")
            image = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
            answer = {"id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
                      "choices": [{"index": 0, "finish_reason": "stop", "message": {
                          "role": "assistant", "content": f"{question} -> a 1x1 image ({image[:22]})"}}]}
        else:
            answer = {"text": "hello from the recording"}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def media_files(tmp_path):
    folder = tmp_path / "attached"
    folder.mkdir()
    (folder / "dot.png").write_bytes(PNG)
    (folder / "note.wav").write_bytes(b"RIFF0000WAVEfmt fake audio")
    return folder


def test_without_endpoints_the_tools_say_what_to_configure(toolbox_for, media_files):
    box = toolbox_for({"media": stdio("memento.mcp_servers.media")}, allowed_paths=[str(media_files)])
    image = call(box, "describe_image", path=str(media_files / "dot.png"))
    assert image.status == "error" and "no vision endpoint configured" in image.text and "--vision-model" in image.text
    audio = call(box, "transcribe_audio", path=str(media_files / "note.wav"))
    assert audio.status == "error" and "no audio transcription endpoint configured" in audio.text


def test_image_question_and_transcription_through_the_endpoint(toolbox_for, media_files, endpoint, tmp_path):
    box = toolbox_for({"media": stdio("memento.mcp_servers.media", "--vision-model", "some-vlm", "--vision-base-url",
                                      endpoint, "--audio-model", "some-asr", "--audio-base-url", endpoint)},
                      allowed_paths=[str(media_files)])
    answer = call(box, "describe_image", path=str(media_files / "dot.png"), question="What colour is it?")
    assert answer.status == "success" and answer.text == "What colour is it? -> a 1x1 image (data:image/png;base64,)"
    words = call(box, "transcribe_audio", path=str(media_files / "note.wav"))
    assert words.status == "success" and words.text == "hello from the recording"
    path, kind, body = Endpoint.requests[-1]
    assert path.endswith("/audio/transcriptions") and kind.startswith("multipart/form-data") and b"some-asr" in body
    (tmp_path / "elsewhere.png").write_bytes(PNG)
    refused = call(box, "describe_image", path=str(tmp_path / "elsewhere.png"))
    assert refused.status == "error" and "outside the files this run may read" in refused.text
