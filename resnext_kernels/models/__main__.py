"""python -m resnext_kernels.models --table: the paper's complexity table, counted from the
built models (parameters and multiply-accumulates at 224x224)."""

import argparse

from . import PAPER_TABLE, count_macs, count_parameters, resnext50


def complexity_table():
    rows = []
    for c, d in PAPER_TABLE:
        model = resnext50(c, d)
        width = model.layer1[0].conv2.out_channels
        rows.append(dict(cardinality=c, width=d, group_conv_width=width,
                         params=count_parameters(model), macs=count_macs(model)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--table", action="store_true", help="print the complexity table")
    args = ap.parse_args(argv)
    if not args.table:
        ap.print_help()
        return
    print(f"{'C':>3s} {'d':>3s} {'3x3 width':>9s} {'params (M)':>11s} {'MACs (G)':>9s}")
    for r in complexity_table():
        print(f"{r['cardinality']:3d} {r['width']:3d} {r['group_conv_width']:9d} "
              f"{r['params'] / 1e6:11.2f} {r['macs'] / 1e9:9.2f}")


if __name__ == "__main__":
    main()
