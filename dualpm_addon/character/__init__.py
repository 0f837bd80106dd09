"""The animal's own character: the template as a subdivided, UV-mapped, skinned mesh
(mesh.py, subdivide.py, uv.py), the instance's shape deformed toward the photo's evidence
(deform.py; `build(rec)` for a pipeline.Reconstruction, `shape(...)` inside the pipeline), its
quality checks (quality.py) and the photo's colours baked into the atlas (texture.py,
instance.py). docs/character.md has the method and the measured figures.
"""

from .deform import DeformOptions, build, shape
from .mesh import LEVELS, CharacterMesh, load_character

__all__ = ["CharacterMesh", "load_character", "LEVELS", "build", "shape", "DeformOptions"]
