"""What S-CFG's attention captures share: the per-evaluation collector of processed maps and the
split of a batched call into its cond / uncond passes."""

CAPTURE_KEY = "scfg"


class ScfgCollector:
    """Running sums of each pass's processed (tokens, fore) maps during one evaluation."""

    def __init__(self):
        self.pending_self = {}
        self.sums = [None, None]  # uncond pass, cond pass: (tokens sum, fore sum, layer count)

    def add(self, pass_index: int, tokens, fore) -> None:
        previous = self.sums[pass_index]
        self.sums[pass_index] = (
            (tokens, fore, 1) if previous is None else (previous[0] + tokens, previous[1] + fore, previous[2] + 1)
        )

    def finalize(self):
        """((tokens, fore) of the uncond pass, same of the cond pass), layer means; None if a pass is missing."""
        if None in self.sums:
            return None
        return tuple((tokens / count, fore / count) for tokens, fore, count in self.sums)


def passes(tensor, cond_or_uncond: list):
    """(pass index, chunk) for each chunk of a batched tensor: 1 for cond chunks, 0 for uncond."""
    for chunk, kind in zip(tensor.chunk(len(cond_or_uncond)), cond_or_uncond):
        yield (1 if kind == 0 else 0), chunk
