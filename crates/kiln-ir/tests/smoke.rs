use kiln_ir::builder::{Conv, Network};
use kiln_ir::text;

#[test]
fn lenet_prints_and_parses_back() {
    let mut net = Network::new("lenet5");
    let x = net.input("input", [1, 1, 28, 28]).unwrap();
    let h = net
        .named("conv1")
        .conv2d(x, Conv::new(6, [5, 5]).padding(2))
        .unwrap();
    let h = net.relu(h).unwrap();
    let h = net.avg_pool2d(h, [2, 2], [2, 2]).unwrap();
    let h = net.flatten(h).unwrap();
    let h = net.leaky_relu(h, 0.1).unwrap();
    let y = net.named("output").dense(h, 10).unwrap();
    net.output(y).unwrap();
    let g = net.finish().unwrap();
    let s = text::print(&g);
    println!("{s}");
    let g2 = text::parse(&s).unwrap();
    assert_eq!(g, g2);
    assert_eq!(text::print(&g2), s);
}
