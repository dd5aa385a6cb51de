"""Language-model metrics: perplexity from per-token log-likelihoods, and an interpolated
Kneser-Ney n-gram model on the same token ids (the baseline a neural LM must beat)."""

import collections
import math

import numpy as np


def perplexity(negative_log_likelihoods):
    """exp(mean NLL in nats) over every predicted token."""
    values = np.asarray(negative_log_likelihoods, np.float64)
    return float(np.exp(values.mean()))


class KneserNey:
    """Interpolated Kneser-Ney (Chen & Goodman 1998) of order n with one discount per order,
    D = n1 / (n1 + 2 n2) from the counts of counts; lower orders use continuation counts; the
    unigram level is interpolated with the uniform distribution, so every token has mass."""

    def __init__(self, order, vocabulary_size):
        self.order, self.vocabulary_size = order, vocabulary_size

    def fit(self, sequences):
        """sequences: token-id sequences (documents); n-grams do not cross their boundaries."""
        n = self.order
        top = collections.Counter()
        for sequence in sequences:
            sequence = tuple(int(t) for t in sequence)
            top.update(sequence[i : i + n] for i in range(len(sequence) - n + 1))
        # tables[k] counts (k+1)-grams: raw counts at the top order, below it continuation counts
        # N1+(. g), the number of distinct tokens seen before g.
        self.tables = [None] * n
        self.tables[n - 1] = top
        for k in range(n - 1, 0, -1):
            self.tables[k - 1] = collections.Counter(gram[1:] for gram in self.tables[k])
        self.discounts, self.context_totals, self.context_types = [], [], []
        for table in self.tables:
            n1 = sum(1 for c in table.values() if c == 1)
            n2 = sum(1 for c in table.values() if c == 2)
            self.discounts.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.75)
            totals, types = collections.Counter(), collections.Counter()
            for gram, c in table.items():
                totals[gram[:-1]] += c
                types[gram[:-1]] += 1
            self.context_totals.append(totals)
            self.context_types.append(types)
        return self

    def probability(self, history, token):
        """P(token | history), history a tuple of up to order-1 previous token ids."""
        history = tuple(history)[-(self.order - 1) :] if self.order > 1 else ()
        p = 1.0 / self.vocabulary_size
        for k in range(len(history) + 1):  # from the unigram level up to the full history
            context = history[len(history) - k :]
            total = self.context_totals[k].get(context, 0)  # tables[k] holds (k+1)-grams
            if not total:
                continue  # an unseen history: the lower order's estimate stands
            d = self.discounts[k]
            count = self.tables[k].get(context + (token,), 0)
            p = max(count - d, 0) / total + d * self.context_types[k][context] / total * p
        return p

    def negative_log_likelihoods(self, windows):
        """windows (N, L+1): NLL of tokens 1..L of each window given the tokens before them in it
        (the same targets and contexts a recurrent LM scores on the same windows)."""
        values = []
        for window in np.asarray(windows):
            window = [int(t) for t in window]
            for i in range(1, len(window)):
                if window[i] == 0:
                    continue
                values.append(-math.log(self.probability(window[max(0, i - self.order + 1) : i], window[i])))
        return values
