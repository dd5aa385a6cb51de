"""Node classification: a graph backbone (GCN) on one graph, semi-supervised, to a verified LiteRT file.

    python recipes/node_classification.py                 # the Drosophila connectome (default)
    toolkit run node_classification --data karate --labels-per-class 2
    toolkit run node_classification --data edges:edges.csv,labels:labels.csv --backbone graphsage

Graph -> structural node features -> GCN backbone -> per-node softmax head -> model.fit on the
labelled nodes only -> .keras, SavedModel, LiteRT fp32 and int8, each scored on the test nodes,
with logistic regression (same features) and label propagation (same graph) as baselines.
"""

import keras
import numpy as np

from toolkit import recipe, tasks
from toolkit.data import graphs
from toolkit.errors import ToolkitError
from toolkit.export import report
from toolkit.tasks import node_classification as task

DEFAULTS = dict(data="drosophila", backbone="gcn", epochs=200, learning_rate=1e-2, patience=40)


def parse_args(argv=None):
    p = recipe.parser("node_classification", __doc__.splitlines()[0], **DEFAULTS)
    p.add_argument("--labels-per-class", type=recipe.positive_int, default=5, help="labelled training nodes per class")
    p.add_argument("--head-dropout", type=recipe.fraction, default=0.5)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    return p.parse_args(argv)


def baselines(data, split):
    """Test accuracy of logistic regression on the same node features, and of label propagation
    (Zhou et al.'s local and global consistency) on the same graph, from the same labelled nodes;
    each with its one knob (C, alpha) chosen on the validation nodes, as the GCN's epochs are."""
    import networkx as nx
    from networkx.algorithms import node_classification
    from sklearn.linear_model import LogisticRegression

    train, validation, test = split["train"], split["validation"], split["test"]
    labels = data.labels

    def logistic(c):
        return LogisticRegression(C=c, max_iter=5000).fit(data.features[train], labels[train]).predict(data.features)

    def propagation(alpha):
        graph = nx.from_numpy_array(data.adjacency)
        for node in train:
            graph.nodes[int(node)]["label"] = int(labels[node])
        return np.asarray(node_classification.local_and_global_consistency(graph, alpha, label_name="label"))

    found = {}
    for name, fit, knobs in (("logistic_regression", logistic, (0.1, 1.0, 10.0)),
                             ("label_propagation", propagation, (0.1, 0.5, 0.9, 0.99))):  # fmt: skip
        predictions = [fit(k) for k in knobs]
        best = max(range(len(knobs)), key=lambda i: np.mean(predictions[i][validation] == labels[validation]))
        found[name] = float(np.mean(predictions[best][test] == labels[test]))
        found[f"{name}_knob"] = knobs[best]
    return found


def main(argv=None):
    args = parse_args(argv)
    if args.distribute:
        raise ToolkitError("node_classification trains on one whole graph per step: there is no batch to split")
    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_config(args)

    data = graphs.load(args.data)
    split = data.split(args.labels_per_class, args.seed)
    inputs = data.inputs()
    train = task.training_data(inputs, data.labels, split["train"])
    validation = task.training_data(inputs, data.labels, split["validation"])

    model = task.build(
        args.backbone, data.num_nodes, data.features.shape[1], len(data.class_names), args.head_dropout, **options
    )
    recipe.start_from_preset(tasks.backbone_of(model), args)
    task.compile(model, args.learning_rate, weight_decay=args.weight_decay)

    with recipe.TrainingRun("node_classification", args, argv, options) as run:
        run.fit(model, train, validation)
        test_labels = task.masked_labels(data.labels, split["test"])
        formats, outputs = run.export(model, inputs, test_labels, inputs,
                                      class_names=data.class_names)
        reference = baselines(data, split)
        predicted = np.argmax(outputs[0], axis=-1)
        report.plot_graph(
            data.adjacency, predicted, data.labels, data.class_names, split["test"], run.file("graph.png")
        )
        run.conclude(
            model,
            baselines=reference,
            head="dropout + per-node softmax dense on the backbone's node features",
            dataset=data.source,
            nodes=data.num_nodes,
            split_sizes={k: len(v) for k, v in split.items()},
            seed=args.seed,
            figures=["graph.png"],
        )
        run.notes.append("baselines (test accuracy, knob chosen on validation): "
                         + ", ".join(f"{k} {v:g}" for k, v in reference.items()))  # fmt: skip
    return run.result

if __name__ == "__main__":
    main()
