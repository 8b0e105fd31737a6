"""The vision check: does an image sent as an OpenAI content part reach the model?

Its own module because it is the one check with a payload of its own: a PNG made in memory (no
file, nothing fetched), sent with and without, and the prompt tokens compared. A server that
drops images answers 200 all the same (the "zero-image" failure users meet), so the status code
alone says nothing; the token count does.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib

from diag.doctor import FAIL, OK, SKIP, WARN, Context, Result
from diag.doctor.checks.probes import chat_body, error_message, unreachable

VISION_TEXT = "How many images do you see?"


def png(width: int = 64, height: int = 48) -> bytes:
    """A small RGB PNG made in memory: a gradient, so no encoder treats it as blank."""
    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256))
                    for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(png()).decode()


def _image_content(n: int) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": data_url()}} for _ in range(n)] + [{"type": "text", "text": VISION_TEXT}]


def check_vision(ctx: Context) -> Result:
    skip = unreachable(ctx, "vision", need_model=True)
    if skip:
        return skip
    c = ctx.http()
    plain = c.post(ctx.url + "/v1/chat/completions", json=chat_body(ctx, [{"type": "text", "text": VISION_TEXT}], 1))
    if plain.status_code != 200:
        return Result("vision", FAIL, f"the text-only baseline request failed with HTTP {plain.status_code}",
                      remedy="Fix the generation check first.")
    with_img = c.post(ctx.url + "/v1/chat/completions", json=chat_body(ctx, _image_content(1), 1))
    p0 = (plain.json().get("usage") or {}).get("prompt_tokens")
    details = [f"without image: prompt_tokens {p0}"]
    if with_img.status_code != 200:
        msg = error_message(with_img)
        details.append(f"with a 64x48 PNG: HTTP {with_img.status_code}: {msg}")
        if any(s in msg.lower() for s in ("not a multimodal", "image input is not supported", "does not support", "mmproj")):
            return Result("vision", SKIP, "the served model takes no images (text-only)", details,
                          remedy="For images serve a vision-language model (e.g. Qwen3-VL) or start llama-server with --mmproj.")
        return Result("vision", FAIL, f"a request with one small image failed with HTTP {with_img.status_code}", details,
                      remedy="See the server log for the image error (decode, processor, limits).")
    p1 = (with_img.json().get("usage") or {}).get("prompt_tokens")
    details.append(f"with one 64x48 PNG: prompt_tokens {p1}")
    if p0 is None or p1 is None:
        return Result("vision", WARN, "the server reports no usage, so whether the image arrived cannot be told", details)
    if p1 <= p0:
        return Result("vision", FAIL, f"zero-image: the image did not reach the model (prompt_tokens {p1} with, {p0} without)",
                      details, remedy="The server ignores the image part: it is a text-only model, or the chat template drops "
                                      "images. Serve a VL model with its own chat template, and send images as OpenAI "
                                      "content parts ({\"type\": \"image_url\", ...}).")
    limit = _image_limit(ctx)
    summary = f"the image reached the model: +{p1 - p0} prompt tokens for a 64x48 PNG"
    if limit is not None:
        over = c.post(ctx.url + "/v1/chat/completions", json=chat_body(ctx, _image_content(limit + 1), 1))
        details.append(f"{limit + 1} images (limit {limit}): HTTP {over.status_code}: {error_message(over) if over.status_code != 200 else 'accepted'}")
        summary += f"; {limit + 1} images (over --limit-mm-per-prompt {limit}) -> HTTP {over.status_code}"
    return Result("vision", OK, summary, details)


def _image_limit(ctx: Context) -> int | None:
    raw = ctx.flags.get("--limit-mm-per-prompt") or ctx.log_facts.get("limit_mm_per_prompt")
    if not raw:
        return None
    try:
        return int(json.loads(raw.replace("'", '"')).get("image"))
    except (ValueError, AttributeError, TypeError):
        if "image=" in raw:
            try:
                return int(raw.split("image=")[1].split(",")[0])
            except ValueError:
                return None
    return None
