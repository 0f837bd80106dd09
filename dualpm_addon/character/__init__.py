"""The animal's own character: the template as a subdivided, UV-mapped, skinned mesh
(mesh.py, subdivide.py, uv.py) and the instance's shape deformed toward the photo's evidence
(deform.py). docs/character.md has the method and the measured figures.
"""

from .mesh import LEVELS, CharacterMesh, load_character

__all__ = ["CharacterMesh", "load_character", "LEVELS"]
