"""Image description and question answering, and audio transcription, over MCP, through
OpenAI-compatible multimodal endpoints (OpenAI, vLLM, Ollama, llama.cpp server, ...).

Endpoints are set by options (or the matching MEMENTO_* environment variables); with none set,
the tools answer with a clear error. Files are confined like the documents server's: the run's
attached files and workspace (sent with each call), `MEMENTO_ALLOWED_PATHS` and `--allow`.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import os
from dataclasses import dataclass

from mcp.server.fastmcp import Context, FastMCP

from memento.mcp_servers._run import add_transport_options, run_server
from memento.mcp_servers.documents import extra_roots, open_allowed

MAX_MEDIA_BYTES = 25 * 2**20


@dataclass
class Endpoint:
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"

    def client(self, what: str, option: str):
        if not self.model:
            raise ValueError(f"no {what} endpoint configured: start the media server with --{option}-model "
                             f"(and --{option}-base-url for a server other than OpenAI's)")
        from openai import OpenAI

        key = os.environ.get(self.api_key_env) or ("not-needed" if self.base_url else None)
        if key is None:
            raise ValueError(f"no API key for the {what} endpoint: pass {self.api_key_env} to the server's env")
        return OpenAI(base_url=self.base_url or None, api_key=key, timeout=120, max_retries=1)


vision = Endpoint(os.environ.get("MEMENTO_VISION_MODEL", ""), os.environ.get("MEMENTO_VISION_BASE_URL", ""))
audio = Endpoint(os.environ.get("MEMENTO_AUDIO_MODEL", ""), os.environ.get("MEMENTO_AUDIO_BASE_URL", ""))
server = FastMCP("memento-media", log_level="WARNING",
                 instructions="Describe images, answer questions about them, and transcribe audio.")


def _read_media(path: str, ctx: Context | None) -> tuple[bytes, str]:
    name, data = open_allowed(path, ctx)
    if len(data) > MAX_MEDIA_BYTES:
        raise ValueError(f"{path} is {len(data)} bytes; at most {MAX_MEDIA_BYTES} are sent")
    return data, mimetypes.guess_type(name)[0] or "application/octet-stream"


@server.tool()
def describe_image(path: str, question: str = "Describe this image in detail.", ctx: Context | None = None) -> str:
    """Describe an image, or answer a question about it."""
    client = vision.client("vision", "vision")
    data, mime = _read_media(path, ctx)
    if not mime.startswith("image/"):
        raise ValueError(f"{path} is not an image ({mime})")
    reply = client.chat.completions.create(model=vision.model, messages=[{"role": "user", "content": [
        {"type": "text", "text": question},
        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}},
    ]}])
    return reply.choices[0].message.content or "(no answer)"


@server.tool()
def transcribe_audio(path: str, language: str | None = None, ctx: Context | None = None) -> str:
    """Transcribe an audio file to text."""
    client = audio.client("audio transcription", "audio")
    data, _ = _read_media(path, ctx)
    extra = {"language": language} if language else {}
    result = client.audio.transcriptions.create(model=audio.model, file=(os.path.basename(path), data), **extra)
    return getattr(result, "text", None) or str(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name, endpoint in (("vision", vision), ("audio", audio)):
        parser.add_argument(f"--{name}-model", default=endpoint.model, help=f"{name} model name")
        parser.add_argument(f"--{name}-base-url", default=endpoint.base_url, help=f"OpenAI-compatible {name} endpoint")
        parser.add_argument(f"--{name}-api-key-env", default=endpoint.api_key_env,
                            help="environment variable holding the key (pass it in the server's env)")
    parser.add_argument("--allow", action="append", default=[], metavar="PATH", help="a readable file or folder")
    add_transport_options(parser)
    args = parser.parse_args()
    for name, endpoint in (("vision", vision), ("audio", audio)):
        endpoint.model = getattr(args, f"{name}_model")
        endpoint.base_url = getattr(args, f"{name}_base_url")
        endpoint.api_key_env = getattr(args, f"{name}_api_key_env")
    extra_roots.extend(args.allow)
    run_server(server, args)


if __name__ == "__main__":
    main()
