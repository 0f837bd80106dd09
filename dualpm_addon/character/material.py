"""One material description shared by the writers: the .blend's Principled BSDF
(operators/surface.py) and the .glb's PBR metallic-roughness material (gltf_write.py).

The base colour is the baked atlas (sRGB, row 0 the top); fur is rough and not metallic. A
texture-less material (the template look) carries its flat linear colour instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUGHNESS = 0.8  # fur and hide scatter: no sharp highlight
METALLIC = 0.0


@dataclass(frozen=True)
class Material:
    name: str
    base_color_texture: np.ndarray | None = None  # (S, S, 3) uint8 sRGB, row 0 the image's top
    base_color: tuple = (1.0, 1.0, 1.0, 1.0)  # linear RGBA, multiplied with the texture (glTF)
    roughness: float = ROUGHNESS
    metallic: float = METALLIC

    def png(self) -> bytes:
        """The texture as PNG bytes (what the .glb embeds)."""
        from ..preview import encode_png

        return encode_png(np.ascontiguousarray(self.base_color_texture, dtype=np.uint8))


def textured(name: str, image: np.ndarray) -> Material:
    return Material(name=name, base_color_texture=np.asarray(image, dtype=np.uint8))
