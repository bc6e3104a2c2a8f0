"""An MLP classifier for scikit-learn's bundled 8x8 handwritten digits.

    pip install -e ".[examples]" && python examples/digits_mlp.py [--compile]

Trains 64-128-64-10 with cross-entropy and Adam on 80% of the 1,797 digits
and reports the accuracy on the held-out 20%. With --compile the training
step runs through gradc.compile.
"""
import argparse
import sys
import time

import numpy as np

import gradc as torch
import gradc.nn as nn
import gradc.optim as optim


def load_digits():
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        sys.exit('this example needs scikit-learn: pip install -e ".[examples]"')
    d = sk_load()
    x = (d.data / 16.0).astype(np.float32)
    return x, d.target.astype(np.int64)


def progress(epoch, epochs, i, n, loss, width=30):
    done = int(width * (i + 1) / n)
    bar = "#" * done + "." * (width - done)
    sys.stdout.write(f"\repoch {epoch + 1:2d}/{epochs} [{bar}] loss {loss:.4f}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--compile", action="store_true", help="run the training step through gradc.compile")
    args = ap.parse_args()

    torch.manual_seed(0)
    x, y = load_digits()
    order = np.random.default_rng(0).permutation(len(x))
    split = int(0.8 * len(x))
    train, test = order[:split], order[split:]
    x_train, y_train = x[train], y[train]
    x_test, y_test = torch.from_numpy(x[test]), torch.from_numpy(y[test])

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    def train_step(xb, yb):
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    step = torch.compile(train_step) if args.compile else train_step
    n_batches = split // args.batch  # full batches only: one compiled shape
    start = time.perf_counter()
    for epoch in range(args.epochs):
        perm = np.random.default_rng(epoch).permutation(split)
        for i in range(n_batches):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            loss = step(torch.from_numpy(x_train[idx]), torch.from_numpy(y_train[idx]))
            if i % 5 == 0 or i == n_batches - 1:
                progress(epoch, args.epochs, i, n_batches, loss.item())
        sys.stdout.write("\n")
    elapsed = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        pred = model(x_test).argmax(1)
    acc = (pred == y_test).float().mean().item()
    print(f"trained {args.epochs} epochs in {elapsed:.1f} s ({'compiled' if args.compile else 'eager'})")
    print(f"test accuracy: {acc * 100:.2f}% on {len(test)} held-out digits")


if __name__ == "__main__":
    main()
