"""CPU inference kernel for the student: energy, forces and virial in one compiled call.

Why: on a 21-atom molecule a forward + autograd backward of the torch model is ~260 small
aten operators, and their per-call overhead (not arithmetic) is most of an MD step. This
module runs the same network with the forward pass and its hand-derived backward pass
(gradient of the energy with respect to the edge vectors) written as Numba-compiled loops:
gathers, filter products and neighbour sums of each message are one fused loop over edges,
and no autograd graph is built.

It is inference only (no gradients with respect to the weights, so not for training) and
it gives the torch model's numbers: the tests compare energy, forces and stress against
:class:`~mlff_distiller.student.model.StudentModel` for every layer layout (first layer,
vector layers, scalar-only last message), for float32 and float64 and for periodic cells.

Units: positions and cell in A; energy eV, forces eV/A, virial eV (``dE/d strain``);
stress = ``virial / volume`` in eV/A^3.

The first call per dtype compiles (a few seconds; cached on disk by Numba afterwards).
"""

from __future__ import annotations

import math

import numpy as np

from .repulsion import ZBL_COEFFS, ZBL_DECAYS

_ZBL_COEFFS = np.asarray(ZBL_COEFFS, dtype=np.float64)
_ZBL_DECAYS = np.asarray(ZBL_DECAYS, dtype=np.float64)

try:  # numba comes with quests (a dependency); keep the torch path usable without it
    import numba

    def _njit(fn):
        try:  # compiled once, then cached on disk next to this file or in the user's cache
            return numba.njit(cache=True, error_model="numpy")(fn)
        except RuntimeError:  # no writable cache location: compile in each process instead
            return numba.njit(cache=False, error_model="numpy")(fn)

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None
    HAVE_NUMBA = False

    def _njit(fn):
        return fn


@_njit
def _silu_and_grad(z):
    """silu(z) and its derivative, elementwise, in z's dtype (z C-contiguous)."""
    y = np.empty_like(z)
    dy = np.empty_like(z)
    zf = z.ravel()
    yf = y.ravel()
    dyf = dy.ravel()
    for k in range(zf.shape[0]):
        x = zf[k]
        sig = 1.0 / (1.0 + np.exp(-x))
        yf[k] = x * sig
        dyf[k] = sig * (1.0 + x * (1.0 - sig))
    return y, dy


@_njit
def _layer_layout(flags, layer, W2, f):
    """(first, scalar_only, last, message width, start of the direction block) of a layer."""
    width = W2.shape[0]
    return flags[layer, 0] != 0, flags[layer, 1] != 0, flags[layer, 2] != 0, width, width - f


@_njit
def _angular_basis(d, out, jac):
    """Real spherical harmonics of degree 2 (out[0:5]) and 3 (out[5:12]) of the unit vector
    ``d`` (normalised as in :class:`~mlff_distiller.student.model._Angular`) and their
    derivatives with respect to the components of ``d`` (jac[m, c])."""
    x = d[0]
    y = d[1]
    z = d[2]
    r3 = np.sqrt(3.0)
    a = np.sqrt(10.0) / 4.0
    b = np.sqrt(15.0)
    e = np.sqrt(6.0) / 4.0
    z5 = 5.0 * z * z
    out[0] = r3 * x * y
    out[1] = r3 * y * z
    out[2] = 1.5 * z * z - 0.5
    out[3] = r3 * x * z
    out[4] = 0.5 * r3 * (x * x - y * y)
    out[5] = a * y * (3.0 * x * x - y * y)
    out[6] = b * x * y * z
    out[7] = e * y * (z5 - 1.0)
    out[8] = 0.5 * z * (z5 - 3.0)
    out[9] = e * x * (z5 - 1.0)
    out[10] = 0.5 * b * z * (x * x - y * y)
    out[11] = a * x * (x * x - 3.0 * y * y)
    jac[:, :] = 0.0
    jac[0, 0] = r3 * y
    jac[0, 1] = r3 * x
    jac[1, 1] = r3 * z
    jac[1, 2] = r3 * y
    jac[2, 2] = 3.0 * z
    jac[3, 0] = r3 * z
    jac[3, 2] = r3 * x
    jac[4, 0] = r3 * x
    jac[4, 1] = -r3 * y
    jac[5, 0] = 6.0 * a * x * y
    jac[5, 1] = 3.0 * a * (x * x - y * y)
    jac[6, 0] = b * y * z
    jac[6, 1] = b * x * z
    jac[6, 2] = b * x * y
    jac[7, 1] = e * (z5 - 1.0)
    jac[7, 2] = 10.0 * e * y * z
    jac[8, 2] = 7.5 * z * z - 1.5
    jac[9, 0] = e * (z5 - 1.0)
    jac[9, 2] = 10.0 * e * x * z
    jac[10, 0] = b * x * z
    jac[10, 1] = -b * y * z
    jac[10, 2] = 0.5 * b * (x * x - y * y)
    jac[11, 0] = 3.0 * a * (x * x - y * y)
    jac[11, 1] = -6.0 * a * x * y


@_njit
def _angular_forward(s, rbf, d, inside, ii, jj, WnT, bn, WrT, WoT, bo):
    """The angular invariants of the first layer (model._Angular): new scalar features and
    what the backward pass needs (neighbour weights, radial weights, A_clm)."""
    n = s.shape[0]
    nc = WnT.shape[1] // 2
    nb = np.dot(s, WnT) + bn  # (N, 2C)
    rad = np.dot(rbf, WrT)  # (E, 2C)
    amp = np.zeros((n, 12, nc), dtype=s.dtype)
    ylm = np.zeros(12, dtype=np.float64)
    jac = np.zeros((12, 3), dtype=np.float64)
    for e in range(ii.shape[0]):
        if not inside[e]:
            continue
        _angular_basis(d[e], ylm, jac)
        at = ii[e]
        b = jj[e]
        for q in range(nc):
            w2 = nb[b, q] * rad[e, q]
            w3 = nb[b, nc + q] * rad[e, nc + q]
            for m in range(5):
                amp[at, m, q] += ylm[m] * w2
            for m in range(5, 12):
                amp[at, m, q] += ylm[m] * w3
    inv = np.zeros((n, 2 * nc), dtype=s.dtype)
    for at in range(n):
        for q in range(nc):
            for m in range(5):
                inv[at, q] += amp[at, m, q] * amp[at, m, q]
            for m in range(5, 12):
                inv[at, nc + q] += amp[at, m, q] * amp[at, m, q]
    return s + np.dot(inv, WoT) + bo, nb, rad, amp


@_njit
def _angular_backward(gs, d, inside, ii, jj, Wr, Wo, nb, rad, amp, g_rbf, g_d):
    """Adds the angular block's gradient (from ``gs`` = d energy / d its output features) to
    ``g_rbf`` and ``g_d`` (the edge gradients the geometry backward turns into forces)."""
    nc = nb.shape[1] // 2
    g_inv = np.dot(gs, Wo)  # (N, 2C)
    g_rad = np.zeros((ii.shape[0], 2 * nc), dtype=gs.dtype)
    ylm = np.zeros(12, dtype=np.float64)
    jac = np.zeros((12, 3), dtype=np.float64)
    gy = np.zeros(12, dtype=np.float64)
    for e in range(ii.shape[0]):
        if not inside[e]:
            continue
        _angular_basis(d[e], ylm, jac)
        gy[:] = 0.0
        at = ii[e]
        b = jj[e]
        for q in range(nc):
            g2 = 2.0 * g_inv[at, q]
            g3 = 2.0 * g_inv[at, nc + q]
            w2 = nb[b, q] * rad[e, q]
            w3 = nb[b, nc + q] * rad[e, nc + q]
            gw2 = 0.0
            gw3 = 0.0
            for m in range(5):
                ga = g2 * amp[at, m, q]
                gw2 += ga * ylm[m]
                gy[m] += ga * w2
            for m in range(5, 12):
                ga = g3 * amp[at, m, q]
                gw3 += ga * ylm[m]
                gy[m] += ga * w3
            g_rad[e, q] = gw2 * nb[b, q]
            g_rad[e, nc + q] = gw3 * nb[b, nc + q]
        for c in range(3):
            acc = 0.0
            for m in range(12):
                acc += gy[m] * jac[m, c]
            g_d[e, c] += acc
    g_rbf += np.dot(g_rad, Wr)


@_njit
def _student_energy_forces(
    pos, species, ii, jj, shift, emb, rbf_freq, layers, flags, readout, params, angular
):
    """Energy (float64, network part), forces (N, 3), virial (3, 3) and per-atom energies
    (N,) float64 (network part) of one structure.

    ``layers[k]`` = (WfT, Wf, W1T, W1, b1, W2T, W2, b2, WuvT, Wuv, Wm1T, Wm1, bm1, Wm2T, Wm2,
    bm2) with ``xT`` the C-contiguous transpose of torch's ``Linear.weight``; ``flags[k]`` =
    (first, scalar_only, last); ``readout`` = (Wr1T, Wr1, br1, wr2, br2); ``params`` = (cutoff,
    envelope prefactor, pi / cutoff, 1e-8, energy scale, 0) in the model's dtype; ``angular`` =
    (WnT, bn, WrT, Wr, WoT, Wo, bo) of the angular block (zero columns in WnT: none).
    """
    cutoff = params[0]
    k_env = params[1]
    w_env = params[2]
    eps = params[3]
    energy_scale = params[4]
    zero = params[5]
    n = pos.shape[0]
    n_edges = ii.shape[0]
    n_layers = flags.shape[0]
    f = emb.shape[1]
    n_rbf = rbf_freq.shape[0]

    # -- edge geometry ------------------------------------------------------------------
    rvec = np.empty((n_edges, 3), dtype=pos.dtype)
    r = np.empty(n_edges, dtype=pos.dtype)
    d = np.zeros((n_edges, 3), dtype=pos.dtype)
    env = np.zeros(n_edges, dtype=pos.dtype)
    rbf = np.zeros((n_edges, n_rbf), dtype=pos.dtype)
    inside = np.zeros(n_edges, dtype=np.bool_)
    sin_k = np.zeros((n_edges, n_rbf), dtype=pos.dtype)
    cos_k = np.zeros((n_edges, n_rbf), dtype=pos.dtype)
    for e in range(n_edges):
        a = ii[e]
        b = jj[e]
        rr = zero
        for c in range(3):
            x = pos[b, c] - pos[a, c] + shift[e, c]
            rvec[e, c] = x
            rr += x * x
        rr = np.sqrt(rr)
        r[e] = rr
        if rr < cutoff:
            inside[e] = True
            # rbf_freq[k] = (k + 1) pi / cutoff: sin((k+1) t) and cos((k+1) t) by the
            # Chebyshev recurrence from one sin and one cos of t = pi r / cutoff
            t = np.float64(rr) * np.float64(w_env)  # the recurrence runs in float64
            c1 = np.cos(t)
            s1 = np.sin(t)
            env[e] = k_env * (c1 + 1.0)
            for c in range(3):
                d[e, c] = rvec[e, c] / rr
            scale = env[e] / rr
            c2 = c1 + c1
            sk, ck = s1, c1
            sp, cp = 0.0, 1.0
            for k in range(n_rbf):
                sin_k[e, k] = sk
                cos_k[e, k] = ck
                rbf[e, k] = sk * scale
                sk, sp = c2 * sk - sp, sk
                ck, cp = c2 * ck - cp, ck

    # -- forward, keeping what the backward pass needs ------------------------------------
    s = emb[species].copy()
    WnT, bn, WrT, Wr, WoT, Wo, bo = angular
    use_angular = WnT.shape[1] > 0
    if use_angular:
        s, ang_nb, ang_rad, ang_amp = _angular_forward(s, rbf, d, inside, ii, jj, WnT, bn, WrT, WoT, bo)
    v = np.zeros((n, 3, f), dtype=pos.dtype)
    w3 = 3 * f
    s_in = np.empty((n_layers, n, f), dtype=pos.dtype)
    v_in = np.empty((n_layers, n, 3, f), dtype=pos.dtype)
    z1_h = np.empty((n_layers, n, f), dtype=pos.dtype)
    phi_h = np.zeros((n_layers, n, w3), dtype=pos.dtype)
    uw_h = np.empty((n_layers, n, 3, 2 * f), dtype=pos.dtype)
    wn_h = np.empty((n_layers, n, f), dtype=pos.dtype)
    zm_h = np.empty((n_layers, n, f), dtype=pos.dtype)
    a_h = np.empty((n_layers, n, w3), dtype=pos.dtype)
    p_h = np.empty((n_layers, n, f), dtype=pos.dtype)

    for layer in range(n_layers):
        (WfT, Wf, W1T, W1, b1, W2T, W2, b2, WuvT, Wuv, Wm1T, Wm1, bm1, Wm2T, Wm2, bm2) = layers[layer]
        first, scalar_only, last, width, c0 = _layer_layout(flags, layer, W2, f)
        s_in[layer] = s
        v_in[layer] = v
        filt = np.dot(rbf, WfT)  # (E, width)
        z1 = np.dot(s, W1T) + b1
        h1, _ = _silu_and_grad(z1)
        phi = np.dot(h1, W2T) + b2  # (N, width)
        z1_h[layer] = z1
        phi_h[layer, :, :width] = phi

        s_mid = s.copy()
        v_mid = v.copy()
        for e in range(n_edges):
            if not inside[e]:
                continue
            a = ii[e]
            b = jj[e]
            for q in range(f):
                s_mid[a, q] += phi[b, q] * filt[e, q]
            if not scalar_only:
                for q in range(f):
                    xl = phi[b, c0 + q] * filt[e, c0 + q]
                    for c in range(3):
                        v_mid[a, c, q] += xl * d[e, c]
                if not first:
                    for q in range(f):
                        xm = phi[b, f + q] * filt[e, f + q]
                        for c in range(3):
                            v_mid[a, c, q] += xm * v[b, c, q]

        # gated update
        uw = np.dot(v_mid.reshape(n * 3, f), WuvT).reshape(n, 3, 2 * f)
        uw_h[layer] = uw
        inp = np.empty((n, 2 * f), dtype=pos.dtype)
        pv = np.zeros((n, f), dtype=pos.dtype)
        for at in range(n):
            for q in range(f):
                ww = eps
                pp = zero
                for c in range(3):
                    wq = uw[at, c, f + q]
                    ww += wq * wq
                    pp += uw[at, c, q] * wq
                wn_h[layer, at, q] = np.sqrt(ww)
                pv[at, q] = pp
                inp[at, q] = s_mid[at, q]
                inp[at, f + q] = wn_h[layer, at, q]
        zm = np.dot(inp, Wm1T) + bm1
        hm, _ = _silu_and_grad(zm)
        av = np.dot(hm, Wm2T) + bm2  # (N, 3F): a_vv, a_sv, a_ss
        zm_h[layer] = zm
        a_h[layer] = av
        p_h[layer] = pv
        s = np.empty((n, f), dtype=pos.dtype)
        for at in range(n):
            for q in range(f):
                s[at, q] = s_mid[at, q] + av[at, 2 * f + q] + av[at, f + q] * pv[at, q]
        if not last:
            v = v_mid.copy()
            for at in range(n):
                for c in range(3):
                    for q in range(f):
                        v[at, c, q] += av[at, q] * uw[at, c, q]

    Wr1T, Wr1, br1, wr2, br2 = readout
    zr = np.dot(s, Wr1T) + br1
    hr, dhr = _silu_and_grad(zr)
    atom_e = np.dot(hr, wr2) + br2[0]
    atom_energy = np.empty(n, dtype=np.float64)
    energy = 0.0
    for at in range(n):
        atom_energy[at] = float(atom_e[at] * energy_scale)
        energy += atom_energy[at]

    # -- backward: d energy / d (edge vectors) ---------------------------------------------
    gs = np.dot(dhr * (wr2 * energy_scale), Wr1)  # (N, F)
    gv = np.zeros((n, 3, f), dtype=pos.dtype)
    g_rbf = np.zeros((n_edges, n_rbf), dtype=pos.dtype)
    g_d = np.zeros((n_edges, 3), dtype=pos.dtype)
    for layer in range(n_layers - 1, -1, -1):
        (WfT, Wf, W1T, W1, b1, W2T, W2, b2, WuvT, Wuv, Wm1T, Wm1, bm1, Wm2T, Wm2, bm2) = layers[layer]
        first, scalar_only, last, width, c0 = _layer_layout(flags, layer, W2, f)
        uw = uw_h[layer]
        av = a_h[layer]
        pv = p_h[layer]
        wn = wn_h[layer]

        # update block
        g_a = np.zeros((n, w3), dtype=pos.dtype)
        g_uw = np.empty((n, 3, 2 * f), dtype=pos.dtype)
        for at in range(n):
            for q in range(f):
                gsq = gs[at, q]
                g_a[at, 2 * f + q] = gsq
                g_a[at, f + q] = gsq * pv[at, q]
                gp = gsq * av[at, f + q]
                gvv = zero
                for c in range(3):
                    u = uw[at, c, q]
                    w = uw[at, c, f + q]
                    gu = gp * w
                    if not last:
                        gvv += gv[at, c, q] * u
                        gu += gv[at, c, q] * av[at, q]
                    g_uw[at, c, q] = gu
                    g_uw[at, c, f + q] = gp * u
                g_a[at, q] = gvv
        _, dzm = _silu_and_grad(zm_h[layer])
        g_inp = np.dot(np.dot(g_a, Wm2) * dzm, Wm1)  # (N, 2F)
        g_s_mid = gs + g_inp[:, :f]
        for at in range(n):
            for q in range(f):
                k = g_inp[at, f + q] / wn[at, q]
                for c in range(3):
                    g_uw[at, c, f + q] += k * uw[at, c, f + q]
        g_v_mid = np.dot(g_uw.reshape(n * 3, 2 * f), Wuv).reshape(n, 3, f)
        if not last:
            g_v_mid += gv

        # message block
        phi = phi_h[layer]
        filt = np.dot(rbf, WfT)  # recomputed: cheaper than keeping (E, width) per layer
        vin = v_in[layer]
        g_phi = np.zeros((n, width), dtype=pos.dtype)
        g_filt = np.zeros((n_edges, width), dtype=pos.dtype)
        g_v_in = g_v_mid.copy()
        for e in range(n_edges):
            if not inside[e]:
                continue
            a = ii[e]
            b = jj[e]
            for q in range(f):
                gx = g_s_mid[a, q]
                g_phi[b, q] += gx * filt[e, q]
                g_filt[e, q] = gx * phi[b, q]
            if not scalar_only:
                for q in range(f):
                    gxl = zero
                    xl = phi[b, c0 + q] * filt[e, c0 + q]
                    for c in range(3):
                        gm = g_v_mid[a, c, q]
                        gxl += gm * d[e, c]
                        g_d[e, c] += gm * xl
                    g_phi[b, c0 + q] += gxl * filt[e, c0 + q]
                    g_filt[e, c0 + q] = gxl * phi[b, c0 + q]
                if not first:
                    for q in range(f):
                        gxm = zero
                        xm = phi[b, f + q] * filt[e, f + q]
                        for c in range(3):
                            gm = g_v_mid[a, c, q]
                            gxm += gm * vin[b, c, q]
                            g_v_in[b, c, q] += gm * xm
                        g_phi[b, f + q] += gxm * filt[e, f + q]
                        g_filt[e, f + q] = gxm * phi[b, f + q]
        g_rbf += np.dot(g_filt, Wf)
        _, dz1 = _silu_and_grad(z1_h[layer])
        gs = g_s_mid + np.dot(np.dot(g_phi, W2) * dz1, W1)
        gv = g_v_in
    if use_angular:
        _angular_backward(gs, d, inside, ii, jj, Wr, Wo, ang_nb, ang_rad, ang_amp, g_rbf, g_d)

    # -- geometry backward: edge gradients to forces and virial -----------------------------
    forces = np.zeros((n, 3), dtype=np.float64)
    virial = np.zeros((3, 3), dtype=np.float64)
    for e in range(n_edges):
        if not inside[e]:
            continue
        rr = r[e]
        ev = env[e]
        denv = -k_env * w_env * sin_k[e, 0]
        dscale = denv / rr - ev / (rr * rr)
        scale = ev / rr
        g_r = zero
        for k in range(n_rbf):
            g_r += g_rbf[e, k] * (rbf_freq[k] * cos_k[e, k] * scale + sin_k[e, k] * dscale)
        gdd = g_d[e, 0] * d[e, 0] + g_d[e, 1] * d[e, 1] + g_d[e, 2] * d[e, 2]
        a = ii[e]
        b = jj[e]
        for c in range(3):
            g = float(g_r * d[e, c] + (g_d[e, c] - gdd * d[e, c]) / rr)
            forces[b, c] -= g
            forces[a, c] += g
            for c2 in range(3):
                virial[c2, c] += float(rvec[e, c2]) * g
    return energy, forces, virial, atom_energy


@_njit
def _repulsion_energy_forces(pos, species, ii, jj, shift, table, n_el, coeffs, decays):
    """The ZBL repulsion prior of :mod:`~mlff_distiller.student.repulsion` for one structure:
    per-atom energies (N,) float64 eV, forces (N, 3) eV/A and virial (3, 3) eV, for a full
    neighbour list (each pair listed both ways, half its energy to each atom)."""
    n = pos.shape[0]
    atom_energy = np.zeros(n, dtype=np.float64)
    forces = np.zeros((n, 3), dtype=np.float64)
    virial = np.zeros((3, 3), dtype=np.float64)
    for e in range(ii.shape[0]):
        a = ii[e]
        b = jj[e]
        row = species[a] * n_el + species[b]
        rv0 = np.float64(pos[b, 0] - pos[a, 0] + shift[e, 0])
        rv1 = np.float64(pos[b, 1] - pos[a, 1] + shift[e, 1])
        rv2 = np.float64(pos[b, 2] - pos[a, 2] + shift[e, 2])
        r = np.sqrt(rv0 * rv0 + rv1 * rv1 + rv2 * rv2)
        u = r * table[row, 2]
        if u >= 1.0:
            continue
        rs = max(r, 1e-3)
        inv_a = table[row, 1]
        x = rs * inv_a
        phi = 0.0
        dphi = 0.0
        for k in range(coeffs.shape[0]):
            t = coeffs[k] * np.exp(-decays[k] * x)
            phi += t
            dphi -= decays[k] * t
        u5 = u**5
        sw = 1.0 - 28.0 * u5 * u + 48.0 * u5 * u * u - 21.0 * u5 * u * u * u
        dsw = (-168.0 * u5 + 336.0 * u5 * u - 168.0 * u5 * u * u) * table[row, 2]
        c = 0.5 * table[row, 0]
        atom_energy[a] += c / rs * phi * sw
        if r < 1e-3:  # clamped: no force from inside the clamp (as the torch path)
            de_dr = c / rs * phi * dsw
        else:
            de_dr = c * ((-phi / (rs * rs) + dphi * inv_a / rs) * sw + phi / rs * dsw)
        g = de_dr / r if r > 0.0 else 0.0
        rv = (rv0, rv1, rv2)
        for c1 in range(3):
            gc = g * rv[c1]
            forces[b, c1] -= gc
            forces[a, c1] += gc
            for c2 in range(3):
                virial[c2, c1] += rv[c2] * gc
    return atom_energy, forces, virial


class FastStudent:
    """The weights of a :class:`~mlff_distiller.student.model.StudentModel` laid out for
    :func:`_student_energy_forces` (CPU, one structure per call)."""

    def __init__(self, model):
        if not HAVE_NUMBA:
            raise RuntimeError("the fast student kernel needs numba: pip install numba")
        sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        dtype = sd["embedding.weight"].dtype
        self.dtype = dtype

        def c(x):
            return np.ascontiguousarray(x, dtype=dtype)

        layers = []
        flags = []
        for k, (message, update) in enumerate(zip(model.messages, model.updates)):
            wf = sd[f"filters.{k}.weight"]
            w1, b1 = sd[f"messages.{k}.phi.0.weight"], sd[f"messages.{k}.phi.0.bias"]
            w2, b2 = sd[f"messages.{k}.phi.2.weight"], sd[f"messages.{k}.phi.2.bias"]
            wuv = sd[f"updates.{k}.uv.weight"]
            wm1, bm1 = sd[f"updates.{k}.mlp.0.weight"], sd[f"updates.{k}.mlp.0.bias"]
            wm2, bm2 = sd[f"updates.{k}.mlp.2.weight"], sd[f"updates.{k}.mlp.2.bias"]
            layers.append(
                tuple(
                    c(x)
                    for x in (wf.T, wf, w1.T, w1, b1, w2.T, w2, b2, wuv.T, wuv, wm1.T, wm1, bm1, wm2.T, wm2, bm2)
                )
            )
            flags.append((int(message.first), int(message.scalar_only), int(update.last)))
        self.layers = tuple(layers)
        self.flags = np.asarray(flags, dtype=np.int64)
        wr1, br1 = sd["readout.0.weight"], sd["readout.0.bias"]
        wr2, br2 = sd["readout.2.weight"], sd["readout.2.bias"]
        self.readout = (c(wr1.T), c(wr1), c(br1), c(wr2[0]), c(br2))
        self.embedding = c(sd["embedding.weight"])
        if "angular.0.out.weight" in sd:
            wn, bn = sd["angular.0.neighbour.weight"], sd["angular.0.neighbour.bias"]
            wr, wo, bo = sd["angular.0.radial.weight"], sd["angular.0.out.weight"], sd["angular.0.out.bias"]
            self.angular = (c(wn.T), c(bn), c(wr.T), c(wr), c(wo.T), c(wo), c(bo))
        else:  # zero channels: the kernel skips the block
            f, n_rbf = self.embedding.shape[1], len(sd["rbf_freq"])
            self.angular = (np.zeros((f, 0), dtype), np.zeros(0, dtype), np.zeros((n_rbf, 0), dtype),
                            np.zeros((0, n_rbf), dtype), np.zeros((0, f), dtype), np.zeros((f, 0), dtype),
                            np.zeros(f, dtype))
        self.rbf_freq = c(sd["rbf_freq"])
        # the kernel computes sin(rbf_freq[k] r) by recurrence from rbf_freq[0] = pi / cutoff;
        # students trained before the EMA stopped averaging buffers carry float32 drift of
        # ~1e-6 relative in these constants, harmless at float32 precision
        expected = np.arange(1, len(self.rbf_freq) + 1) * math.pi / float(model.cutoff)
        if not np.allclose(self.rbf_freq, expected, rtol=1e-5):
            raise ValueError("fast student kernel: radial frequencies are not k pi / cutoff")
        self.z_to_index = sd["z_to_index"].astype(np.int64)
        self.atom_energy_const = model.atom_energy_const.detach().cpu().numpy().astype(np.float64)
        self.cutoff = float(model.cutoff)
        self.edge_norm = float(model.edge_norm)
        self.energy_scale = float(model.energy_scale)
        self.elements = list(model.elements)
        self.use_repulsion = bool(model.use_repulsion)
        self.num_elements = int(model.num_elements)
        self.repulsion_table = np.ascontiguousarray(model.repulsion_table.detach().cpu().numpy(), dtype=np.float64)
        self.params = np.array(
            [self.cutoff, 0.5 * self.edge_norm, math.pi / self.cutoff, 1e-8, self.energy_scale, 0.0], dtype=dtype
        )

    def __call__(self, numbers, positions, edge_index, shift_vec, per_atom: bool = False):
        """Energy (eV, float), forces (N, 3) eV/A and virial (3, 3) eV for one structure;
        with ``per_atom`` a fourth item, the per-atom energies (N,) eV (float64) that sum
        to the energy.

        ``edge_index`` (2, E) with ``r_ij = positions[j] - positions[i] + shift_vec``;
        ``shift_vec`` (E, 3) in A. Pairs at or beyond the cutoff contribute zero.
        """
        species = self.z_to_index[np.asarray(numbers, dtype=np.int64)]
        if (species < 0).any():
            raise ValueError("student: structure contains an element the student was not trained on")
        dt = self.dtype
        energy, forces, virial, atom_energy = _student_energy_forces(
            np.ascontiguousarray(positions, dtype=dt),
            species,
            np.ascontiguousarray(edge_index[0], dtype=np.int64),
            np.ascontiguousarray(edge_index[1], dtype=np.int64),
            np.ascontiguousarray(shift_vec, dtype=dt),
            self.embedding,
            self.rbf_freq,
            self.layers,
            self.flags,
            self.readout,
            self.params,
            self.angular,
        )
        if self.use_repulsion:
            rep_atom, rep_forces, rep_virial = _repulsion_energy_forces(
                np.ascontiguousarray(positions, dtype=np.float64),
                species,
                np.ascontiguousarray(edge_index[0], dtype=np.int64),
                np.ascontiguousarray(edge_index[1], dtype=np.int64),
                np.ascontiguousarray(shift_vec, dtype=np.float64),
                self.repulsion_table,
                self.num_elements,
                _ZBL_COEFFS,
                _ZBL_DECAYS,
            )
            energy += float(rep_atom.sum())
            forces += rep_forces
            virial += rep_virial
            atom_energy = atom_energy + rep_atom
        atom_const = self.atom_energy_const[species]
        energy += float(atom_const.sum())
        if per_atom:
            return energy, forces, virial, atom_energy + atom_const
        return energy, forces, virial


def fast_student(model) -> FastStudent:
    """:class:`FastStudent` for a :class:`~mlff_distiller.student.model.StudentModel` or a
    loaded TorchScript export (rebuilt from the export's config, statistics and weights)."""
    from .io import ExportedStudent, student_from_dict

    if isinstance(model, ExportedStudent):
        state = {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
        state.pop("repulsion_table", None)  # a non-persistent buffer that TorchScript lists anyway
        model = student_from_dict({**model.meta, "state_dict": state}, where="TorchScript export")
    return FastStudent(model)
