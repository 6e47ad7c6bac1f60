//! What `graph!` made of all-MiniLM-L6-v2: the fusion plan of the whole forward pass (no model
//! files needed). Each layer norm runs in one row pass with its residual add and bias, the
//! GELU and the biases are matmul epilogues, each attention is one flash pass, and dead
//! intermediates' buffers are reused.

use mia_runtime::PassKind;
use minilm::MiniLm;

#[test]
fn forward_pass_is_fused_and_planned() {
    let plan = MiniLm::plan();
    println!("{plan}");
    let count = |f: &dyn Fn(&PassKind) -> bool| plan.passes.iter().filter(|p| f(&p.kind)).count();
    assert_eq!(
        count(&|k| matches!(k, PassKind::Attention { mask: true, .. })),
        6
    );
    assert_eq!(count(&|k| matches!(k, PassKind::Gather)), 3);
    // Per layer: Q and K (two products sharing x, the most one GPU tile holds), V, the output
    // projection, FFN up (GELU epilogue) and down.
    assert_eq!(count(&|k| matches!(k, PassKind::MatMul { .. })), 6 * 5);
    // The embedding norm and two per layer, each one pass (with its residual add and bias);
    // then pooling (the masked sum and the token count) and the L2 norm.
    let rows = count(&|k| matches!(k, PassKind::Rows { .. }));
    assert!(rows <= 1 + 2 * 6 + 4, "{rows} row passes\n{plan}");
    // What remains: the additive mask. The heads merged back ([B, H, T, 32] -> [B, T, 384])
    // are written so by each attention pass, with no copy.
    let copies = count(&|k| matches!(k, PassKind::Elementwise));
    assert!(copies <= 1, "{copies} elementwise passes\n{plan}");
    assert_eq!(plan.dispatches(), 57, "{plan}");
    let sizes = [("B", 32), ("T", 128)];
    let (peak, naive) = (
        plan.peak_bytes(&sizes).unwrap(),
        plan.naive_bytes(&sizes).unwrap(),
    );
    println!(
        "{} dispatches; intermediates at B=32, T=128: peak {:.1} MiB of {:.1} MiB without reuse",
        plan.dispatches(),
        peak as f64 / (1 << 20) as f64,
        naive as f64 / (1 << 20) as f64
    );
    assert!(peak * 8 < naive, "peak {peak} vs naive {naive}");
}
