"""Two picks among a stochastic method's k draws from the code-generation literature, neither of which
looks at the reference; sample.py scores them beside top-1, likelihood, the learned pick and the oracle.

    consensus (MBR)   j* = argmax_j  sum_{j' != j} agree(y_j, y_j')
                      minimum Bayes risk decoding over the k generations (Shi et al. 2022, MBR-exec's
                      text form): the draw whose code agrees most with the other draws' code, agree =
                      sentence BLEU-4 (smoothed, CoNaLa tokens; `metrics.bleu4`). Ties go to the lower
                      draw, so k identical generations pick draw 0 (top-1).
    reviewer          j* = argmax_j  log p(q | y_j)
                      Coder-Reviewer reranking (Zhang et al. 2023), its reviewer half: the frozen LLM's
                      mean token log-likelihood of the *instruction* q given the generated code y_j,
                      with no tuned prompt (the manual REVIEW text asks for the instruction), so that
                      the score judges the code, not the prompt that made it.
"""
import data
import llm
import metrics
from methods.selector import pair_losses  # (and its picks first: the order of the rows)
from prompts import PICKS

REVIEW_PROMPT = "Write the one-sentence instruction that this Python code carries out:"


def consensus_pick(gens, agree):
    """For each pair i, the draw j maximising sum_{j' != j} agree(gens[j][i], gens[j'][i]); gens: k lists."""
    k, chosen = len(gens), []
    for i in range(len(gens[0])):
        support = [sum(agree(gens[j][i], gens[m][i]) for m in range(k) if m != j) for j in range(k)]
        chosen.append(max(range(k), key=lambda j: (support[j], -j)))
    return chosen


def bleu_agreement(hyp, ref):
    """Sentence BLEU-4 of one draw's code against another's (smoothed: short snippets share few 4-grams)."""
    return metrics.bleu4([hyp], [ref], smooth=True)


def consensus(draws):
    """prompts.PICKS's "consensus (MBR, BLEU)"."""
    return consensus_pick(draws.gens, bleu_agreement), None


def review_losses(model, tok, codes, instructions, batch_size=32):
    """-log p(q | y) per pair, the mean over the instruction's tokens: the LLM reads [REVIEW_PROMPT ; code]
    and is scored on the instruction, the roles of data.encode's pairs swapped."""
    pairs, _ = data.encode([{"nl": y, "code": q} for y, q in zip(codes, instructions)], tok)
    return pair_losses(model, tok, llm.text_context(model, tok, REVIEW_PROMPT), pairs, batch_size)


def reviewer(draws):
    """prompts.PICKS's "reviewer": for each pair, the draw whose code makes the instruction most likely."""
    losses = [review_losses(draws.model, draws.tok, gens, draws.instructions, draws.batch_size) for gens in draws.gens]
    return [min(range(len(losses)), key=lambda j: (losses[j][i], j)) for i in range(len(draws.instructions))], None


PICKS["consensus (MBR, BLEU)"] = consensus
PICKS["reviewer, p(instruction | code)"] = reviewer
