use super::*;
use kiln_ir::TrainOp;

/// BatchNormalization: at inference `Op::BatchNorm`; with `training_mode = 1` (opset 14 on)
/// on the batch's statistics (`TrainOp::BatchNormTrain`), its running-statistics outputs
/// `running·momentum + batch·(1 − momentum)` with the batch's biased variance, as ONNX.
pub(crate) fn batch_norm(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[
        "epsilon",
        "momentum",
        "spatial",
        "is_test",
        "consumed_inputs",
        "training_mode",
    ])?;
    let training = im.opset >= 14 && a.int("training_mode", 0)? != 0;
    if !training && (1..n.output.len()).any(|i| im.reads_output(n, i)) {
        return unsupported("the running-statistics outputs exist only in training");
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
    if !training {
        return one(im.add(
            n,
            out,
            Op::BatchNorm {
                epsilon,
                activation: None,
            },
            &ins,
        )?);
    }
    let fwd = Op::Train(TrainOp::BatchNormTrain {
        part: BnPart::Forward,
        epsilon,
    });
    let y = im.add(n, out, fwd, &ins[..3])?;
    let mut outs = vec![Val::Node(y)];
    let momentum = a.float("momentum", 0.9)?;
    let dims = im.ty(x).dims().to_vec();
    // elements per channel: all axes but 1 (the shape rule checked the rank)
    let per_channel = dims.iter().product::<usize>() / dims[1].max(1);
    for (i, part, running) in [(1, BnPart::Mean, ins[3]), (2, BnPart::Var, ins[4])] {
        if !im.reads_output(n, i) {
            outs.push(Val::Poisoned);
            continue;
        }
        let name = n.output[i].clone();
        let mut stat = im.add(
            n,
            &format!("{name}.batch"),
            Op::Train(TrainOp::BatchNormTrain { part, epsilon }),
            &[x],
        )?;
        if part == BnPart::Var {
            // kiln's batch variance is the unbiased one (PyTorch's running statistics); ONNX
            // updates with the biased one
            if per_channel < 2 {
                return unsupported(format!(
                    "the running variance of {per_channel} value per channel (input {:?})",
                    dims
                ));
            }
            let f = (per_channel - 1) as f32 / per_channel as f32;
            stat = im.add(n, &format!("{name}.biased"), Op::Scale { factor: f }, &[stat])?;
        }
        let old = im.add(
            n,
            &format!("{name}.decayed"),
            Op::Scale { factor: momentum },
            &[running],
        )?;
        let new = im.add(
            n,
            &format!("{name}.update"),
            Op::Scale {
                factor: 1.0 - momentum,
            },
            &[stat],
        )?;
        outs.push(Val::Node(im.add(
            n,
            &name,
            Op::Binary(BinaryOp::Add),
            &[old, new],
        )?));
    }
    Ok(outs)
}

/// LRN: `Op::Lrn` across channels.
pub(crate) fn lrn(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["alpha", "beta", "bias", "size"])?;
    let size = a
        .opt_int("size")?
        .ok_or_else(|| invalid(n, "attribute `size` is required"))?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| invalid(n, format!("`size` must be positive, got {size}")))?;
    let op = Op::Lrn {
        size,
        alpha: a.float("alpha", 1e-4)?,
        beta: a.float("beta", 0.75)?,
        bias: a.float("bias", 1.0)?,
    };
    let x = im.tensor(n, 0)?;
    one(im.add(n, out, op, &[x])?)
}

/// LayerNormalization (opset 17) over the axes from `axis` on, composed of primitive ops:
/// `d = x − mean(x)`, `y = d·rsqrt(mean(d·d) + ε)·scale + bias`. Its optional Mean and
/// InvStdDev outputs are the two intermediate values.
pub(crate) fn layer_norm(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axis", "epsilon", "stash_type"])?;
    let stash = a.int("stash_type", 1)?;
    if stash != 1 {
        return unsupported(format!(
            "stash_type {stash}; kiln computes the statistics in f32 (stash_type 1)"
        ));
    }
    let x = im.tensor(n, 0)?;
    let rank = im.ty(x).rank();
    let first = axis(n, a.int("axis", -1)?, rank, "axis")?;
    let axes: Vec<usize> = (first..rank).collect();
    let epsilon = a.float("epsilon", 1e-5)?;
    let mean = |axes: &Vec<usize>| Op::ReduceMean {
        axes: axes.clone(),
        keepdims: true,
    };
    let m_name = match n.output.get(1).filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => format!("{out}.mean"),
    };
    let r_name = match n.output.get(2).filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => format!("{out}.inv_std"),
    };
    let m = im.add(n, &m_name, mean(&axes), &[x])?;
    let d = im.add(n, &format!("{out}.centered"), Op::Binary(BinaryOp::Sub), &[x, m])?;
    let dd = im.add(n, &format!("{out}.squared"), Op::Binary(BinaryOp::Mul), &[d, d])?;
    let v = im.add(n, &format!("{out}.var"), mean(&axes), &[dd])?;
    let r = im.add(n, &r_name, Op::Rsqrt { epsilon }, &[v])?;
    let scale = im.tensor(n, 1)?;
    let bias = im.tensor_opt(n, 2, true)?;
    let nrm = im.add(
        n,
        &format!("{out}.normalized"),
        Op::Binary(BinaryOp::Mul),
        &[d, r],
    )?;
    let ys_name = if bias.is_some() {
        format!("{out}.scaled")
    } else {
        out.to_string()
    };
    let mut y = im.add(n, &ys_name, Op::Binary(BinaryOp::Mul), &[nrm, scale])?;
    if let Some(b) = bias {
        y = im.add(n, out, Op::Binary(BinaryOp::Add), &[y, b])?;
    }
    Ok(vec![Val::Node(y), Val::Node(m), Val::Node(r)])
}
