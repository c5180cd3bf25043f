use super::*;
use crate::elab::NormPlacement;
use crate::front::compile_source;

fn outline(src: &str) -> (Outline, Graph) {
    let c = compile_source(src, "t.lam", &[]).unwrap();
    (c.outline().unwrap(), c.forward)
}

const HEAD: &str = "input tokens(batch = 2, length = 4, vocab = 8)\nembed(dim = 8)\n";

#[test]
fn an_order_places_the_weight_sets_it_skips() {
    let src = format!(
        "{HEAD}block l {{ a = attention(heads = 2)\n f = ffn(hidden = 16) }}\nstack l * 5 order [0, 1, 1, 3]\n"
    );
    let (o, _) = outline(&src);
    assert_eq!(o.weight_sets, 5);
    let e = entries(&o);
    assert_eq!(
        e,
        vec![
            Entry::Layer(0),
            Entry::Layer(1),
            Entry::Layer(2),
            Entry::Skipped(2),
            Entry::Layer(3),
            Entry::Skipped(4)
        ]
    );
    assert_eq!(loops(&o), vec![(1, 2)]);
    assert_eq!(o.layers[2].run, 1);
}

#[test]
fn shared_layers_are_one_loop_and_counted_once() {
    let src = format!("{HEAD}block l {{ f = ffn(hidden = 16) }}\nstack l * 3 shared\n");
    let (o, g) = outline(&src);
    assert_eq!(loops(&o), vec![(0, 3)]);
    let svg = svg(&o, &g);
    assert!(svg.contains("shared weights: run 3 of blocks.0"), "{svg}");
    assert!(svg.contains("×3"));
    // norm (2 x 8) + w1 (16 x 8 + 16) + w2 (8 x 16 + 8)
    assert_eq!(params_under(&g, "blocks.0"), 16 + 144 + 136);
    assert_eq!(params_under(&g, "blocks.0.f"), 16 + 144 + 136);
    assert_eq!(params_under(&g, "blocks.0.f.w1"), 144);
}

#[test]
fn steps_show_placement_coefficient_and_skip() {
    let src = format!(
        "{HEAD}norm peri\nblock l {{ a = attention(heads = 2)\n f = ffn(hidden = 16)\n scheme strang(f, a) }}\nstack l * 1\n"
    );
    let (o, g) = outline(&src);
    let steps = &o.blocks[0].steps;
    assert_eq!(steps.len(), 3);
    assert_eq!((steps[0].coef, steps[1].coef), (0.5, 1.0));
    assert_eq!(steps[0].placement, NormPlacement::Peri);
    let svg = svg(&o, &g);
    assert!(
        svg.contains("× 0.5") && svg.contains("LayerNorm out"),
        "{svg}"
    );
    let dot = dot(&o, &g);
    assert!(dot.contains("× 0.5") && dot.contains("cluster_0"), "{dot}");
}

#[test]
fn parallel_branches_meet_in_a_sum() {
    let src = format!(
        "{HEAD}block l {{ a = attention(heads = 2)\n f = ffn(hidden = 16)\n scheme parallel(a, f) }}\nstack l * 1\n"
    );
    let (o, g) = outline(&src);
    assert_eq!(o.blocks[0].steps.len(), 1);
    assert_eq!(o.blocks[0].steps[0].branches.len(), 2);
    assert!(svg(&o, &g).contains(">Σ<"));
}

#[test]
fn svg_tags_balance_and_text_is_escaped() {
    let src = format!("model a_b\n{HEAD}block l {{ f = ffn(hidden = 16) }}\nstack l * 2\n");
    let (o, g) = outline(&src);
    let s = svg(&o, &g);
    for tag in ["svg", "text", "defs", "marker", "style"] {
        let open = s.matches(&format!("<{tag}")).count();
        let close = s.matches(&format!("</{tag}>")).count();
        assert_eq!(open, close, "<{tag}> in\n{s}");
    }
    assert!(
        s.contains("embedding 8 -&gt; 8") && !s.contains("8 -> 8"),
        "{s}"
    );
}
