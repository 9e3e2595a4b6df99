use super::*;

/// BatchNormalization at inference.
pub(crate) fn batch_norm(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[
        "epsilon",
        "momentum",
        "spatial",
        "is_test",
        "consumed_inputs",
        "training_mode",
    ])?;
    if (1..n.output.len()).any(|i| im.reads_output(n, i)) {
        return unsupported("the running-statistics outputs exist only in training");
    }
    if a.int("training_mode", 0)? != 0 {
        return unsupported("training_mode = 1");
    }
    if im.opset < 7 && a.int("is_test", 0)? == 0 {
        return unsupported("training mode (is_test = 0)");
    }
    if im.opset < 9 && a.int("spatial", 1)? == 0 {
        return unsupported("spatial = 0 (statistics per element instead of per channel)");
    }
    let x = im.tensor(n, 0)?;
    let mut ins = vec![x];
    for (i, trainable) in [(1, true), (2, true), (3, false), (4, false)] {
        let id = im
            .tensor_opt(n, i, trainable)?
            .ok_or_else(|| invalid(n, format!("input {i} is required")))?;
        ins.push(id);
    }
    let epsilon = a.float("epsilon", 1e-5)?;
    one(im.add(n, out, Op::BatchNorm { epsilon }, &ins)?)
}
