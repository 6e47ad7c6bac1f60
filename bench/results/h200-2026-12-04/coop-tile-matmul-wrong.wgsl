enable f16;
enable wgpu_cooperative_matrix;
// mia kernel `matmul`, pass 0, tile 128x128x16/tc: generated; validated by naga at build time.
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> B0: array<f32>;
@group(0) @binding(2) var<storage, read> B1: array<f32>;
@group(0) @binding(3) var<storage, read_write> B2: array<f32>;
var<workgroup> AH: array<f16, 3072>;
var<workgroup> AL: array<f16, 3072>;
var<workgroup> BH: array<f16, 2176>;
var<workgroup> BL: array<f16, 2176>;
var<workgroup> CS: array<f32, 4096>;
var<workgroup> OVF: u32;
@compute @workgroup_size(512)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= P[0]) { return; }
    const BM = 128u;
    const BMP = 136u;
    const BN = 128u;
    const BNP = 136u;
    const BK = 16u;
    const AKP = BK + 8u;
    const TM = 32u;
    const TN = 32u;
    const KS = 1u;
    const W = 1u;
    const TXN = BN / TN;
    const TYN = BM / TM;
    const TPK = TXN * TYN;
    const BOFF = BK * BMP;
    const STAGE = 4224u;
    let M = P[3];
    let N = P[4];
    let K = P[8];
    let tiles_n = (N + BN - 1u) / BN;
    let tiles_m = (M + BM - 1u) / BM;
    let tn0 = (wid % tiles_n) * BN;
    let tm0 = ((wid / tiles_n) % tiles_m) * BM;
    let ab = 0u;
    let a_rs = P[9];
    let a_cs = P[11];
    let at = a_rs == 1u && a_cs != 1u;
    var pa: array<f32, 4>;
    let bb0 = 0u;
    let b0_rs = P[14];
    let b0_cs = P[13];
    let bt0 = b0_cs != 1u && b0_rs == 1u;
    var pb0: array<f32, 4>;
    var c0_0 = coop_mat16x16<f32, C>();
    var d0_0 = coop_mat16x16<f32, C>();
    var c0_1 = coop_mat16x16<f32, C>();
    var d0_1 = coop_mat16x16<f32, C>();
    var c0_2 = coop_mat16x16<f32, C>();
    var d0_2 = coop_mat16x16<f32, C>();
    var c0_3 = coop_mat16x16<f32, C>();
    var d0_3 = coop_mat16x16<f32, C>();
    let sg = lid / 32u;
    let qm = (sg / TXN) * 32u;
    let qn = (sg % TXN) * 32u;
    if (lid == 0u) { OVF = 0u; }
    workgroupBarrier();
    for (var r = 0u; r < 4u; r = r + 1u) {
        let e = lid + r * 512u;
        let gm = tm0 + select(e / BK, e % BM, at);
        let gk = 0u + select(e % BK, e / BM, at);
        var v = 0.0;
        if (gm < M && gk < K) { v = B0[ab + gm * a_rs + gk * a_cs]; }
        pa[r] = v;
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
        let e = lid + r * 512u;
        let gk = 0u + select(e / BN, e % BK, bt0);
        let gn = tn0 + select(e % BN, e / BK, bt0);
        var v = 0.0;
        if (gk < K && gn < N) { v = B1[bb0 + gk * b0_rs + gn * b0_cs]; }
        pb0[r] = v;
    }
    for (var k0 = 0u; k0 < K; k0 = k0 + BK) {
    for (var r = 0u; r < 4u; r = r + 1u) {
        let e = lid + r * 512u;
        {
            let v = pa[r];
            if (!(abs(v) < 32768.0)) { OVF = 1u; }
            let hv = bitcast<f32>(bitcast<u32>(v) & 0xffffe000u);
            let o = select((e / BK) * AKP + e % BK, (e % BM) * AKP + e / BM, at);
            AH[o] = f16(hv);
            AL[o] = f16((v - hv) * 2048.0);
        }
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
        let e = lid + r * 512u;
        {
            let v = pb0[r];
            if (!(abs(v) < 32768.0)) { OVF = 1u; }
            let hv = bitcast<f32>(bitcast<u32>(v) & 0xffffe000u);
            let o = 0u + select((e / BN) * BNP + e % BN, (e % BK) * BNP + e / BK, bt0);
            BH[o] = f16(hv);
            BL[o] = f16((v - hv) * 2048.0);
        }
    }
    workgroupBarrier();
    for (var r = 0u; r < 4u; r = r + 1u) {
        let e = lid + r * 512u;
        let gm = tm0 + select(e / BK, e % BM, at);
        let gk = k0 + BK + select(e % BK, e / BM, at);
        var v = 0.0;
        if (gm < M && gk < K) { v = B0[ab + gm * a_rs + gk * a_cs]; }
        pa[r] = v;
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
        let e = lid + r * 512u;
        let gk = k0 + BK + select(e / BN, e % BK, bt0);
        let gn = tn0 + select(e % BN, e / BK, bt0);
        var v = 0.0;
        if (gk < K && gn < N) { v = B1[bb0 + gk * b0_rs + gn * b0_cs]; }
        pb0[r] = v;
    }
    for (var kk = 0u; kk < BK; kk = kk + 16u) {
        let aH0 = coopLoadT<coop_mat16x16<f16, A>>(&AH[(qm + 0u) * AKP + kk], 24u);
        let aL0 = coopLoadT<coop_mat16x16<f16, A>>(&AL[(qm + 0u) * AKP + kk], 24u);
        let aH1 = coopLoadT<coop_mat16x16<f16, A>>(&AH[(qm + 16u) * AKP + kk], 24u);
        let aL1 = coopLoadT<coop_mat16x16<f16, A>>(&AL[(qm + 16u) * AKP + kk], 24u);
        let bH0_0 = coopLoadT<coop_mat16x16<f16, B>>(&BH[0u + kk * BNP + qn + 0u], 136u);
        let bL0_0 = coopLoadT<coop_mat16x16<f16, B>>(&BL[0u + kk * BNP + qn + 0u], 136u);
        let bH0_1 = coopLoadT<coop_mat16x16<f16, B>>(&BH[0u + kk * BNP + qn + 16u], 136u);
        let bL0_1 = coopLoadT<coop_mat16x16<f16, B>>(&BL[0u + kk * BNP + qn + 16u], 136u);
        c0_0 = coopMultiplyAdd(aH0, bH0_0, c0_0);
        d0_0 = coopMultiplyAdd(aH0, bL0_0, d0_0);
        d0_0 = coopMultiplyAdd(aL0, bH0_0, d0_0);
        c0_1 = coopMultiplyAdd(aH0, bH0_1, c0_1);
        d0_1 = coopMultiplyAdd(aH0, bL0_1, d0_1);
        d0_1 = coopMultiplyAdd(aL0, bH0_1, d0_1);
        c0_2 = coopMultiplyAdd(aH1, bH0_0, c0_2);
        d0_2 = coopMultiplyAdd(aH1, bL0_0, d0_2);
        d0_2 = coopMultiplyAdd(aL1, bH0_0, d0_2);
        c0_3 = coopMultiplyAdd(aH1, bH0_1, c0_3);
        d0_3 = coopMultiplyAdd(aH1, bL0_1, d0_3);
        d0_3 = coopMultiplyAdd(aL1, bH0_1, d0_3);
    }
    workgroupBarrier();
    }
    let ovf = OVF;
    coopStoreT(c0_0 + d0_0 * (1.0 / 2048.0), &CS[(sg * 1u + 0u) * 256u], 16u);
    workgroupBarrier();
    for (var e = lid % 32u; e < 256u; e = e + 32u) {
    let i0 = tm0 + qm + 0u + e / 16u;
    let i1 = tn0 + qn + 0u + e % 16u;
    if (i0 < M && i1 < N) {
        let gm = i0;
        let gn = i1;
    let b0 = i0 * N + i1;
    let v0: f32 = CS[(sg * 1u + 0u) * 256u + e];
    B2[b0] = v0;
    }
    }
    workgroupBarrier();
    coopStoreT(c0_1 + d0_1 * (1.0 / 2048.0), &CS[(sg * 1u + 0u) * 256u], 16u);
    workgroupBarrier();
    for (var e = lid % 32u; e < 256u; e = e + 32u) {
    let i0 = tm0 + qm + 0u + e / 16u;
    let i1 = tn0 + qn + 16u + e % 16u;
    if (i0 < M && i1 < N) {
        let gm = i0;
        let gn = i1;
    let b0 = i0 * N + i1;
    let v0: f32 = CS[(sg * 1u + 0u) * 256u + e];
    B2[b0] = v0;
    }
    }
    workgroupBarrier();
    coopStoreT(c0_2 + d0_2 * (1.0 / 2048.0), &CS[(sg * 1u + 0u) * 256u], 16u);
    workgroupBarrier();
    for (var e = lid % 32u; e < 256u; e = e + 32u) {
    let i0 = tm0 + qm + 16u + e / 16u;
    let i1 = tn0 + qn + 0u + e % 16u;
    if (i0 < M && i1 < N) {
        let gm = i0;
        let gn = i1;
    let b0 = i0 * N + i1;
    let v0: f32 = CS[(sg * 1u + 0u) * 256u + e];
    B2[b0] = v0;
    }
    }
    workgroupBarrier();
    coopStoreT(c0_3 + d0_3 * (1.0 / 2048.0), &CS[(sg * 1u + 0u) * 256u], 16u);
    workgroupBarrier();
    for (var e = lid % 32u; e < 256u; e = e + 32u) {
    let i0 = tm0 + qm + 16u + e / 16u;
    let i1 = tn0 + qn + 16u + e % 16u;
    if (i0 < M && i1 < N) {
        let gm = i0;
        let gn = i1;
    let b0 = i0 * N + i1;
    let v0: f32 = CS[(sg * 1u + 0u) * 256u + e];
    B2[b0] = v0;
    }
    }
    workgroupBarrier();
}

