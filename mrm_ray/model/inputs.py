"""The one input normaliser: what a prompt, an image and a response may be, and how they become model inputs.

Every reader, the data pipeline's checks, the server, the GRPO prompts and both RL adapters go
through these:

- `image_bytes`: an image as encoded bytes, from bytes, a PIL image, a `{bytes, path}` struct
  (JSON's bytes as base64 text), a `data:` URL or base64 text, or a file name, which is read only
  under a given root (`file_under`, the one containment rule: no URL, no absolute or `..` path
  leaving it). Without a root a string is never a path: the server reads no file.
- `is_image_part`: whether a chat content part is an image (`{"type": "image"}`, `image_url`, or a
  part carrying `image` / `image_url`).
- `<image>` markers in text (LLaMA-Factory, veRL, MMRB2's responses): `split_markers`, `marker_parts`.
- `as_messages`: a prompt (text, or chat messages with parts or markers) as chat messages whose
  image parts are `{"type": "image"}`, one per image given; `response_text`: a response's text.
- videos: `video_frames` checks a video's frames (an ordered list of images); `place_videos` puts each video
  where its part is, by the run's route (`choose_video_route`): the family's own video path where its video
  processor loads, or its frames in order, each an image (`frames_as_images`: on every machine, torchvision
  or not);
- `PairEncoder`: a prompt and K responses as model-ready features (the prompt once), and
  `count_prompt_tokens`: the prompt's length from its images' sizes alone, through the same rendering,
  so the data pipeline's light pass decides truncation exactly as its encoder does (model/truncation.py).

A prompt becomes token ids with the image placeholders expanded, `mm_token_type_ids`,
`pixel_values` and `image_grid_thw`. A response becomes its text tokens followed by `<|im_end|>`,
the token the reward is read at.

A response with images inside it (`<image>` marks in its text, one image each) is its own
group of one: the prompt, then the response up to and including its last image, form the
group's prompt (images expanded by the processor, as in a prompt), and the text after the
last image, with `<|im_end|>`, is the response. Its positions are then exactly those of the
whole sequence, so the packed forward scores it unchanged; only the prompt is not shared.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrm_ray.config.core import VIDEO_ROUTES

END_OF_TURN = "<|im_end|>"
IMAGE_MARKER = "<image>"  # where an image sits in text (a prompt's, or a response's when it shows images)
_IMAGE_TYPES = ("image", "image_url")
_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,", re.I)
_URL = ("http://", "https://", "file:", "ftp://", "s3://", "gs://")
INLINE_ONLY = "images must be inline (base64 or data:image/...;base64,...); this never fetches URLs or reads paths"


class InvalidInput(ValueError):
    """An input that cannot be used; `reason` says why in a few words (a reader quarantines the record with it,
    the server answers 422 with it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TextOnly(InvalidInput):
    """Images were given to a text-only backbone."""


# ------------------------------------------------------------------------------ images
def file_under(root: str | Path, name: str) -> Path:
    """`root / name`, refusing URLs and absolute or `..` paths that leave `root`: the one containment rule."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("missing image: empty file name")
    if "://" in name:
        raise InvalidInput(f"image outside root: {name!r} is a URL; only files under the image root are read")
    root = Path(root)
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InvalidInput(f"image outside root: {name!r} resolves outside {root}")
    return path


def image_reference(image: Any) -> Any:
    """What an image is given as, unwrapped: its bytes (a struct's, or base64 text under `bytes`), or the text
    that names it (a file name, base64, a data: URL), or a PIL image; anything else as it came."""
    if isinstance(image, Mapping):
        data = image.get("bytes")
        if isinstance(data, str):  # JSON cannot hold bytes: base64 text
            return _decode_base64(data)
        if data is not None:
            return bytes(data)
        for key in ("path", "image", "image_url", "url"):
            if image.get(key) is not None:
                return image_reference(image[key])
        return None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return image


def _decode_base64(text: str) -> bytes:
    if _DATA_URL.match(text):
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("not valid base64") from None


def image_bytes(image: Any, *, root: str | Path | None = None) -> bytes:
    """Encoded bytes of an image (see the module's header). A string is a file name under `root` when a root is
    given (`file_under`), else base64 or a data: URL; a URL is never fetched."""
    ref = image_reference(image)
    if isinstance(ref, bytes):
        return ref
    if ref is not None and hasattr(ref, "save") and hasattr(ref, "mode"):  # a PIL image
        buf = io.BytesIO()
        ref.save(buf, format="PNG")
        return buf.getvalue()
    if not isinstance(ref, str) or not ref:
        raise InvalidInput(f"missing image: no bytes or file name in {type(ref).__name__}")
    if _DATA_URL.match(ref):
        return _decode_base64(ref)
    if root is not None:
        path = file_under(root, ref)  # refuses URLs and paths leaving the root
        if not path.is_file():
            raise InvalidInput(f"missing image: {ref}")
        return path.read_bytes()
    if ref.startswith(_URL) or ref.startswith("data:"):
        raise InvalidInput(INLINE_ONLY)
    try:
        return _decode_base64(ref)
    except InvalidInput:
        raise InvalidInput(INLINE_ONLY if ref.startswith(("/", "./", "../", "~")) else "not valid base64") from None


def load_image(image: Any):
    """A PIL RGB image from encoded bytes, a `{bytes: ...}` struct or a PIL image; never a path."""
    from PIL import Image

    if isinstance(image, Image.Image):
        pil = image
    else:
        data = image.get("bytes") if isinstance(image, Mapping) else image
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"image must be encoded bytes or a PIL image, got {type(data).__name__}")
        pil = Image.open(io.BytesIO(bytes(data)))
        pil.load()
    return pil if pil.mode == "RGB" else pil.convert("RGB")


# ------------------------------------------------------------------------------ prompts and responses
def is_image_part(part: Any) -> bool:
    """Whether a chat content part is an image (its `type`, or an `image` / `image_url` it carries)."""
    return isinstance(part, Mapping) and (part.get("type") in _IMAGE_TYPES or part.get("image") is not None
                                          or part.get("image_url") is not None)


def split_markers(text: str) -> list[str]:
    """The text between `<image>` markers, in order (one more piece than markers)."""
    return text.split(IMAGE_MARKER)


def marker_parts(text: str) -> list[dict]:
    """Text split at `<image>` markers into text and image parts (whitespace-only text dropped)."""
    parts: list[dict] = []
    for i, piece in enumerate(split_markers(text)):
        if i:
            parts.append({"type": "image"})
        if piece.strip():
            parts.append({"type": "text", "text": piece})
    return parts


def count_image_parts(messages: Sequence[Mapping]) -> int:
    return sum(is_image_part(p) for m in messages if not isinstance(m["content"], str) for p in m["content"])


def response_text(response: Any) -> str:
    """Text of a response given as a string, a message, or a list of assistant messages.

    Published sets nest text as `content[].text` or `content[].content[].text`.
    """
    if isinstance(response, str):
        return response
    if isinstance(response, Mapping):
        if "content" in response:
            return response_text(response["content"])
        if "text" in response:
            return str(response["text"])
        if "value" in response:
            return str(response["value"])
        raise ValueError(f"response part has no text: keys {sorted(response)}")
    if isinstance(response, Sequence):
        return "".join(response_text(part) for part in response)
    raise TypeError(f"response must be text or messages, got {type(response).__name__}")


def as_messages(prompt: str | Sequence[Mapping], n_images: int) -> list[dict]:
    """Chat messages for a prompt, its image parts `{"type": "image"}`: a plain string becomes one user turn with
    its images first; with images, `<image>` markers in text say where they go instead (text without images keeps
    any `<image>` as text). InvalidInput when the image parts and the images given disagree."""
    strings = [prompt] if isinstance(prompt, str) else [m.get("content") for m in prompt if isinstance(m, Mapping)]
    markers = n_images > 0 and any(isinstance(c, str) and IMAGE_MARKER in c for c in strings)
    if isinstance(prompt, str):
        content = marker_parts(prompt) if markers else \
            [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
    else:
        messages = []
        for m in prompt:
            if not isinstance(m, Mapping):
                raise InvalidInput(f"bad prompt: a message must be a mapping, got {type(m).__name__}")
            content = m.get("content")
            if isinstance(content, str) and markers:
                content = marker_parts(content)
            elif isinstance(content, (list, tuple)):
                content = [{"type": "image"} if is_image_part(p) else p for p in content]
            messages.append({**m, "content": content})
    found = count_image_parts(messages)
    if found != n_images:
        raise InvalidInput(f"image mismatch: {found} image placeholders, {n_images} images")
    return messages


# ------------------------------------------------------------------------------ videos
MAX_VIDEO_FRAMES = 16  # frames a video may have (a frame folder is sampled down to it, evenly)
DEFAULT_VIDEO_FPS = 2.0  # frames per second of a video given as frames, where the video processor names none


def choose_video_route(processor, wanted: str = "auto") -> str:
    """The route this run's videos take, one for every row: "video", the family's own video path (the processor's
    video processor: `pixel_values_videos`, `video_grid_thw`, M-RoPE's temporal axis), or "frames", each video
    given as its frames in order, each an image (`place_videos`). "auto" takes the video path where the processor
    has its video processor (it needs torchvision) and the frames elsewhere."""
    if wanted not in VIDEO_ROUTES:
        raise ValueError(f"video_route must be one of {VIDEO_ROUTES}, got {wanted!r}")
    has_video = getattr(processor, "video_processor", None) is not None
    if wanted == "video" and not has_video:
        raise ValueError("video_route: video needs the family's video processor, which transformers builds only "
                         "where torchvision imports beside torch (here it does not: install the torchvision release "
                         "built for your torch); or set video_route: frames (or auto)")
    if wanted == "auto":
        return "video" if has_video else "frames"
    return wanted


def is_video_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "video"


def sample_frames(frames: Sequence[Any], max_frames: int = MAX_VIDEO_FRAMES) -> list[Any]:
    """At most `max_frames` of a video's frames, evenly spaced from the first to the last, in order."""
    if len(frames) <= max_frames:
        return list(frames)
    return [frames[round(i * (len(frames) - 1) / (max_frames - 1))] for i in range(max_frames)]


def video_frames(frames: Sequence[Any], *, max_frames: int = MAX_VIDEO_FRAMES,
                 root: str | Path | None = None) -> list[bytes]:
    """A video's frames as encoded image bytes, in order (each read as `image_bytes` reads an image), checked: at
    least one, at most `max_frames`, all of one size. InvalidInput with the reason otherwise."""
    from PIL import Image

    if not frames:
        raise InvalidInput("empty video: no frames")
    if len(frames) > max_frames:
        raise InvalidInput(f"too many frames: a video of {len(frames)} frames, over the limit of {max_frames}")
    data = [image_bytes(f, root=root) for f in frames]
    sizes = set()
    for d in data:
        try:
            sizes.add(Image.open(io.BytesIO(d)).size)
        except Exception:
            raise InvalidInput("corrupt image: a video frame cannot be read") from None
    if len(sizes) > 1:
        raise InvalidInput(f"frames of different sizes in one video: {sorted(sizes)}")
    return data


FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def frame_files(folder: Path, max_frames: int = MAX_VIDEO_FRAMES) -> list[Path]:
    """A folder of frames (images, in name order), sampled evenly down to `max_frames`."""
    return sample_frames(sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), max_frames)


def place_videos(prompt: str | Sequence[Mapping], images: Sequence[Any], videos: Sequence[Sequence[Any]], *,
                 frames: bool) -> tuple[str | list[dict], list[Any], list[Sequence[Any]]]:
    """Each video where its `{"type": "video"}` part is (in a text prompt, the videos go before the text, after
    the images that lead it; first when `<image>` marks place the images inside it).
    `frames=True`, the frames route: each video becomes its frames in order, each an image part, and its frames
    join the images in that order. `frames=False`, the video route: the video parts stay, the videos come back
    in order. Returns (the prompt, chat messages when there is a video; the images; the videos).
    A prompt with no video comes back as it was."""
    if not videos and (isinstance(prompt, str) or not any(
            is_video_part(p) for m in prompt if isinstance(m.get("content"), list) for p in m["content"])):
        return prompt, list(images), []
    if isinstance(prompt, str):
        messages = as_messages(prompt, len(images))
        content = messages[0]["content"]
        at = 0 if len(images) and IMAGE_MARKER in prompt else sum(is_image_part(p) for p in content)
        messages[0]["content"] = content[:at] + [{"type": "video"} for _ in videos] + content[at:]
        prompt = messages
    pending_images, pending_videos = list(images), list(videos)
    out_messages, out_images, out_videos = [], [], []
    for message in prompt:
        content = message.get("content")
        if not isinstance(content, list):
            out_messages.append(dict(message))
            continue
        parts = []
        for part in content:
            if is_video_part(part):
                if not pending_videos:
                    raise InvalidInput("video mismatch: more video parts than videos")
                video = pending_videos.pop(0)
                if frames:
                    parts += [{"type": "image"} for _ in video]
                    out_images += list(video)
                else:
                    parts.append({"type": "video"})
                    out_videos.append(video)
            else:
                if is_image_part(part):
                    if not pending_images:
                        raise InvalidInput("image mismatch: more image placeholders than images")
                    out_images.append(pending_images.pop(0))
                    part = {"type": "image"}
                parts.append(part)
        out_messages.append({**message, "content": parts})
    if pending_videos:
        raise InvalidInput(f"video mismatch: {len(pending_videos)} video(s) have no video part in the prompt")
    if pending_images:
        raise InvalidInput(f"image mismatch: {len(pending_images)} image(s) have no image placeholder")
    return out_messages, out_images, out_videos


def frames_as_images(prompt: str | Sequence[Mapping], images: Sequence[Any], videos: Sequence[Sequence[Any]]
                     ) -> tuple[str | list[dict], list[Any]]:
    """The frames route (`place_videos`): (the prompt, every image and frame in the order the parts take them)."""
    prompt, images, _ = place_videos(prompt, images, videos, frames=True)
    return prompt, images


_REPLY = "\ue000"  # a private-use character standing for the reply while the template renders it


def prompt_text(processor, messages: Sequence[Mapping]) -> str:
    """The chat template's rendering of `messages` followed by an assistant reply, cut where the reply's text
    starts: the prompt as the template writes it before a final answer (for Qwen3 and Qwen3.5 that includes
    the empty think block their templates put there), so prompt + response is the template's own rendering
    of the whole conversation, up to the `<|im_end|>` the reward is read at."""
    text = processor.apply_chat_template([*messages, {"role": "assistant", "content": _REPLY}], tokenize=False)
    if text.count(_REPLY) != 1:
        raise ValueError("the chat template did not render the assistant reply once; cannot place the response")
    return text[:text.index(_REPLY)]


class PairEncoder:
    """Turns prompts and responses into model-ready numpy features with one processor."""

    def __init__(self, processor, *, video_route: str = "auto") -> None:
        """`video_route`: how videos reach the model, one route for the encoder's whole run (`choose_video_route`)."""
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_token_id = self.tokenizer.pad_token_id
        self.video_route = choose_video_route(processor, video_route) if getattr(processor, "image_processor", None) \
            else "frames"  # a text-only backbone refuses videos as it refuses images

    def _video_inputs(self, videos: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """The video processor's inputs for videos given as frames: each its frames in order, taken as sampled at
        the processor's fps (`DEFAULT_VIDEO_FPS` where it names none), none sampled again."""
        fps = float(getattr(self.processor.video_processor, "fps", None) or DEFAULT_VIDEO_FPS)
        return {"videos": [[load_image(f) for f in video] for video in videos], "do_sample_frames": False,
                "video_metadata": [{"total_num_frames": len(video), "fps": fps,
                                    "frames_indices": list(range(len(video)))} for video in videos]}

    def encode_prompt(self, prompt: str | Sequence[Mapping], images: Sequence[Any] = (),
                      videos: Sequence[Sequence[Any]] = ()) -> dict[str, np.ndarray]:
        """A prompt's features; its videos (each an ordered list of frames) by this encoder's route."""
        prompt, images, videos = place_videos(prompt, images, videos, frames=self.video_route == "frames")
        pil_images = [load_image(im) for im in images]
        messages = as_messages(prompt, len(pil_images))
        text = prompt_text(self.processor, messages)
        enc = self.processor(text=[text], images=pil_images or None, return_tensors="np",
                             **(self._video_inputs(videos) if videos else {}))
        out = {
            "prompt_ids": enc["input_ids"][0].astype(np.int64),
            "prompt_mm_token_type_ids": enc["mm_token_type_ids"][0].astype(np.int64),
        }
        if pil_images:
            out["pixel_values"] = enc["pixel_values"].astype(np.float32)
            out["image_grid_thw"] = enc["image_grid_thw"].astype(np.int64)
        if videos:
            out["pixel_values_videos"] = enc["pixel_values_videos"].astype(np.float32)
            out["video_grid_thw"] = enc["video_grid_thw"].astype(np.int64)
            if "second_per_grid_ts" in enc:  # Qwen2.5-VL: seconds per temporal patch, M-RoPE's time axis
                out["second_per_grid_ts"] = np.asarray(enc["second_per_grid_ts"], np.float32).reshape(-1)
        return out

    def encode_response(self, response: Any) -> np.ndarray:
        text = response_text(response) + END_OF_TURN
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def image_tokens(self, width: int, height: int) -> int:
        """Tokens one image of this size becomes in the prompt (the processor's own resize and 2x2 merge)."""
        images = self.processor.image_processor
        return images.get_number_of_image_patches(height, width, {}) // images.merge_size ** 2

    def count_prompt_tokens(self, prompt: str | Sequence[Mapping], image_sizes: Sequence[Sequence[int]],
                            videos: Sequence[Sequence[bytes]] = ()) -> int:
        """The prompt's tokens as `encode_prompt` makes them, from its images' (width, height) alone: the same
        rendering, each image placeholder (a special token, never merged with its neighbours) expanded to that
        image's tokens. What the data pipeline's light pass and its encoder both decide truncation from
        (model/truncation.py), so the two cannot treat a record differently.
        `videos` (frames as encoded bytes): on the frames route, their frames' sizes (headers only) counted as
        images where each video is; on the video route the prompt is encoded (the frames decoded) and counted."""
        if (image_sizes or videos) and self.processor.image_processor is None:
            raise TextOnly("a text-only model takes no images; route image items to a vision-language member")
        if videos and self.video_route == "video":  # the video processor's resize and timestamps decide: encode
            from PIL import Image

            stand_ins = [Image.new("RGB", (int(w), int(h))) for w, h in image_sizes]  # a size is all images count
            return len(self.encode_prompt(prompt, stand_ins, videos)["prompt_ids"])
        if videos:
            from mrm_ray.model.images import image_size

            prompt, image_sizes = frames_as_images(prompt, image_sizes, [[image_size(f) for f in v] for v in videos])
        text = prompt_text(self.processor, as_messages(prompt, len(image_sizes)))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids) + sum(self.image_tokens(w, h) - 1 for w, h in image_sizes)

    def encode_pair(self, prompt, images, chosen, rejected, *, margin: float | None = None,
                    videos: Sequence[Sequence[Any]] = ()) -> dict[str, Any]:
        """One pair: prompt features once, plus chosen and rejected response ids."""
        out = self.encode_prompt(prompt, images, videos)
        out["chosen_ids"] = self.encode_response(chosen)
        out["rejected_ids"] = self.encode_response(rejected)
        if margin is not None:
            out["margin"] = float(margin)
        return out

    def _image_span(self) -> str:
        """How the chat template writes one image (`<|vision_start|><|image_pad|><|vision_end|>` for Qwen)."""
        if not hasattr(self, "_span"):
            text = self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": "\x01"}, {"type": "image"},
                                              {"type": "text", "text": "\x02"}]}], tokenize=False)
            self._span = text[text.index("\x01") + 1:text.index("\x02")]
        return self._span

    def encode_response_images(self, response: Any, images: Sequence[Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A response with images inside: (the part up to its last image, as prompt features to append;
        the text after it with `<|im_end|>`, as ids)."""
        segments = split_markers(response_text(response))
        if len(segments) - 1 != len(images):
            raise InvalidInput(f"image mismatch: the response has {len(segments) - 1} {IMAGE_MARKER} marks but "
                               f"{len(images)} images")
        ids, mm, pixels, grids = [], [], [], []
        for segment, image in zip(segments, images):
            ids.append(np.asarray(self.tokenizer(segment, add_special_tokens=False)["input_ids"], np.int64))
            mm.append(np.zeros(len(ids[-1]), np.int64))
            enc = self.processor(text=[self._image_span()], images=[load_image(image)], return_tensors="np")
            ids.append(enc["input_ids"][0].astype(np.int64))
            mm.append(enc["mm_token_type_ids"][0].astype(np.int64))
            pixels.append(enc["pixel_values"].astype(np.float32))
            grids.append(enc["image_grid_thw"].astype(np.int64))
        prefix = {"prompt_ids": np.concatenate(ids), "prompt_mm_token_type_ids": np.concatenate(mm),
                  "pixel_values": np.concatenate(pixels), "image_grid_thw": np.concatenate(grids)}
        return prefix, self.encode_response(segments[-1])

    def encode_groups(self, prompt, images, responses: Sequence[Any],
                      response_images: Sequence[Sequence[Any]] | None = None,
                      videos: Sequence[Sequence[Any]] = ()) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """Groups for one prompt's responses, and where each response landed, (group, index in it): the
        text responses share one group; each response with images inside is a group of its own."""
        response_images = list(response_images or [()] * len(responses))
        if len(response_images) != len(responses):
            raise ValueError(f"{len(response_images)} response image lists for {len(responses)} responses")
        text_only = [k for k, shown in enumerate(response_images) if not shown]
        groups, where = [], [(0, 0)] * len(responses)
        base = self.encode_prompt(prompt, images, videos)
        if text_only:
            groups.append({**base, "responses": [self.encode_response(responses[k]) for k in text_only]})
            for j, k in enumerate(text_only):
                where[k] = (0, j)
        for k, shown in enumerate(response_images):
            if shown:
                prefix, tail = self.encode_response_images(responses[k], shown)
                group = {**base, **{key: np.concatenate([base[key], prefix[key]]) if key in base else prefix[key]
                                    for key in prefix}}
                where[k] = (len(groups), 0)
                groups.append({**group, "responses": [tail]})
        return groups, where

    def encode_group(self, prompt, images, responses: Sequence[Any],
                     videos: Sequence[Sequence[Any]] = ()) -> dict[str, Any]:
        """One prompt with K >= 1 responses: prompt features once, `responses` a list of id arrays."""
        if not responses:
            raise ValueError("a group needs at least one response")
        out = self.encode_prompt(prompt, images, videos)
        out["responses"] = [self.encode_response(r) for r in responses]
        return out

    def encode_item(self, prompt, images, response, videos: Sequence[Sequence[Any]] = ()) -> dict[str, Any]:
        """One prompt/response to score on its own."""
        out = self.encode_prompt(prompt, images, videos)
        out["response_ids"] = self.encode_response(response)
        return out
