"""Grounding in Qwen2.5-VL's format: boxes and points in absolute pixels of the *processed* image, as JSON.

The paper trains on answers such as
    ```json
    [{"bbox_2d": [34, 50, 210, 188], "label": "red circle"}, {"point_2d": [120, 64], "label": "cup"}]
    ```
`grounding_json` writes that (integer pixels, a fenced JSON block), `parse_grounding` reads it back from a model's
answer, and `image_processing_qwen2_5_vl.map_box` moves boxes between original and processed pixels.
"""

import json
import re

_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def grounding_json(objects: list[dict]) -> str:
    """[{"bbox_2d": [x1, y1, x2, y2] or "point_2d": [x, y], "label": str}, ...] -> the fenced JSON answer."""
    cleaned = []
    for index, item in enumerate(objects):
        key = "bbox_2d" if "bbox_2d" in item else "point_2d" if "point_2d" in item else None
        size = {"bbox_2d": 4, "point_2d": 2}.get(key)
        if key is None or len(item[key]) != size:
            raise ValueError(
                f"objects[{index}] needs 'bbox_2d' ([x1, y1, x2, y2]) or 'point_2d' ([x, y]); got {sorted(item)}."
            )
        cleaned.append({key: [round(v) for v in item[key]], "label": str(item.get("label", ""))})
    return "```json\n" + json.dumps(cleaned) + "\n```"


def parse_grounding(text: str) -> list[dict]:
    """Objects from an answer in that format (fenced or bare JSON); [] when it holds none. Malformed items are
    skipped, so a half-right answer still scores what it got right."""
    match = _FENCED.search(text)
    payload = match.group(1) if match else text[text.find("[") : text.rfind("]") + 1]
    try:
        items = json.loads(payload)
    except (json.JSONDecodeError, ValueError):
        return []
    objects = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        for key, size in (("bbox_2d", 4), ("point_2d", 2)):
            value = item.get(key)
            if isinstance(value, list) and len(value) == size and all(isinstance(v, (int, float)) for v in value):
                objects.append({key: value, "label": str(item.get("label", ""))})
                break
    return objects


__all__ = ["grounding_json", "parse_grounding"]
