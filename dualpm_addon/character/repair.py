"""Repairs of a character surface that cuts itself.

`untangle` halves a displacement wherever the displaced surface crosses itself where the
undeformed one did not (the shape solve's last step, deform.py). `instance_rest` carries the
template's character onto the fit's instance rest shape and repairs the crossings the fit's
per-bone maps make (a tail chain shortened into the rump, hip bones bringing the thighs together).
"""

from __future__ import annotations

import numpy as np

from ..fitting import instance_rest_points
from . import quality
from .mesh import CharacterMesh
from .operators import REPAIR_NEIGHBOURS, Solver, solver

REST_REPAIR_ROUNDS = 8  # rounds of untangling the fit's instance rest shape (instance_rest)
SPREAD_STEPS = 3  # times the instance repair applies Solver.spread


def spread(sol: Solver, field: np.ndarray) -> np.ndarray:
    """(W, 3) a fine welded field averaged in space (Solver.spread, SPREAD_STEPS times)."""
    for _ in range(SPREAD_STEPS):
        field = sol.spread @ field
    return field


def instance_rest(character: CharacterMesh, template, fit, repair_rounds: int | None = None,
                  report: dict | None = None) -> CharacterMesh:
    """The template's character carried onto the fit's instance rest shape (bone scales,
    thickness), undeformed: the 'before' of the shape solve.

    The fit's per-bone maps move parts against each other: a tail chain shortened by its scales
    swings its hanging part into the rump it lies 1 % of the body length behind, hip bones
    shortened bring the thighs through each other. No per-point map can know that (the fit
    applies it to lone cloud points), so the surface is repaired here: `untangle` with the
    template under the global scale alone (clean, as the template is) as the undeformed surface
    and the bone scales' and thickness' move from it as the displacement; where the instance
    would cut itself, each vertex's move goes halfway, round by round, to the move averaged in
    space (`spread`: sheets near each other, the tail and the rump, the two thighs, then move
    alike) until it does not. The fit's lone points keep the plain map (pipeline, fitting)."""
    rest = instance_rest_points(template.skeleton, character.vertices, character.skin_joints,
                                character.skin_weights, fit.global_scale, fit.bone_scales,
                                instance=fit.rest_skeleton, thickness=fit.thickness)
    repair_rounds = REST_REPAIR_ROUNDS if repair_rounds is None else int(repair_rounds)
    if repair_rounds > 0:
        sol = solver(template, character.levels)
        if len(sol.fine_canonical) == character.num_welded:
            nw = character.num_welded
            ref, cur = np.zeros((nw, 3)), np.zeros((nw, 3))
            ref[character.weld] = float(fit.global_scale) * np.asarray(character.vertices, np.float64)
            cur[character.weld] = rest
            faces = character.welded_faces
            move = cur - ref
            disp, figures = untangle(ref, move, faces, sol, repair_rounds, toward=spread(sol, move))
            if report is not None:
                report["rest_repair"] = figures
            if figures["vertices_held"]:
                rest = (ref + disp)[character.weld]
    return character.with_vertices(rest)


def untangle(rest: np.ndarray, disp: np.ndarray, faces: np.ndarray, sol: Solver, rounds: int,
             toward: np.ndarray | None = None):
    """(displacement, figures): the displacement halved, round by round, on the two-ring of every
    edge and face that cross where the undeformed surface `rest` did not, until none do (or
    `rounds` ran out). Every edge is tested against the faces nearest it in canonical space
    (quality.candidates, found once per template), on the deformed surface, and, once clean,
    on the repaired surface itself; a round retests only the pairs whose vertices it moved.
    Testing only edges near vertices that moved missed crossings. A crossing `rest` already has
    is left alone. `toward` (W, 3): what a held vertex's displacement moves to (zero, unless
    given: instance_rest gives the displacement averaged in space)."""
    e = sol.edges
    figures = {"new_crossings_per_round": []}
    toward = np.zeros_like(disp) if toward is None else np.asarray(toward, np.float64)

    def held(keep):  # the displacement with the held share of each vertex's moved to `toward`
        return keep[:, None] * disp + (1.0 - keep[:, None]) * toward

    # Pairs near in canonical space (once per template) and near on the deformed surface.
    nf = len(faces)
    extra = quality.candidates(rest + disp, faces, e, REPAIR_NEIGHBOURS // 2)
    key = np.unique(np.concatenate([sol.repair_pairs[0] * nf + sol.repair_pairs[1], extra[0] * nf + extra[1]]))
    ei, fi = key // nf, key % nf
    known = quality.hits(rest, faces, e, ei, fi)  # the undeformed surface's own
    keep = np.ones(len(rest))
    bad = quality.hits(rest + disp, faces, e, ei, fi) & ~known
    checked = False
    for r in range(int(rounds) + 1):
        if not bad.any() and not checked:
            # Clean among the pairs searched so far: search once more on the repaired surface
            # itself (a held region's new edge can meet faces that were not near before).
            checked = True
            cur = rest + held(keep)
            more = quality.candidates(cur, faces, e, REPAIR_NEIGHBOURS // 2)
            new_key = np.setdiff1d(more[0] * nf + more[1], key)
            if len(new_key):
                key = np.concatenate([key, new_key])
                ei, fi = key // nf, key % nf
                add_known = quality.hits(rest, faces, e, new_key // nf, new_key % nf)
                add_bad = quality.hits(cur, faces, e, new_key // nf, new_key % nf) & ~add_known
                known, bad = np.concatenate([known, add_known]), np.concatenate([bad, add_bad])
        figures["new_crossings_per_round"].append(int(bad.sum()))
        if not bad.any() or r == rounds:
            break
        checked = False
        mark = np.zeros(len(rest))
        mark[e[ei[bad]].ravel()] = 1
        mark[faces[fi[bad]].ravel()] = 1
        # Halved on the two-ring, a quarter less on the two-ring around that: a softer edge to
        # the held region than a step, which made new crossings of its own.
        core = sol.ring2 @ mark > 0
        shell = (sol.ring2 @ core.astype(np.float64) > 0) & ~core
        keep[core] *= 0.5
        keep[shell] *= 0.75
        # Only pairs with a vertex that moved can change: test those again.
        moved = core | shell
        again = np.nonzero(moved[e].any(axis=1)[ei] | moved[faces].any(axis=1)[fi])[0]
        bad[again] = quality.hits(rest + held(keep), faces, e, ei[again], fi[again]) & ~known[again]
    figures["vertices_held"] = int(np.sum(keep < 1))
    figures["crossings_left"] = int(bad.sum())
    return held(keep), figures
