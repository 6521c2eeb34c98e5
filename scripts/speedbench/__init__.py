"""Training and evaluation speed, memory and time-to-quality of the product's sequence models
against a plain reference SASRec, in one process, at identical sizes, on identical batches.

    python scripts/bench_speed.py --preset tiny                       # seconds (the test suite's)
    python scripts/bench_speed.py --preset ml1m --contenders reference,transformer --epochs 40
                                         # MovieLens-1M's files (users 1-1,500 in ../shared/data)
    python scripts/bench_speed.py --preset ml1m_synthetic --epochs 10 # ~1M synthetic events, 3,500 items
    python scripts/bench_speed.py --preset shop100k --device cuda     # 100k items (sampled softmax)
    python scripts/bench_speed.py --preset shop1m --device cuda --epochs 2 --eval-batches 40
    python scripts/bench_speed.py --preset ml1m --contenders reference,transformer --levels 0.1,0.15
    python scripts/bench_speed.py --preset ml100k --contenders reference,transformer --epochs 40
    python scripts/bench_speed.py --preset ml1m --contenders transformer,transformer+hstu,bert --epochs 1

Contenders (``--contenders``, comma-separated; default all seven):

- ``reference``: the SASRec+ code (Klenitskiy & Vasilev 2023; :mod:`.reference`): N(0, 0.02)
  initialisation, item vectors times sqrt(D) plus learned absolute positions, ``--layers`` SASRec
  blocks (a LayerNorm'd query attending to the sequence, a residual feed-forward of width dim,
  ReLU), a final LayerNorm, padded keys masked, full cross-entropy over the whole catalogue
  computed at every one of the B x L positions (padded targets ignored), the item embedding shared
  with the output layer, Adam with lr 1e-3;
- ``transformer``, ``gru``, ``lstm``: the product (``model/encoder=...``, ``scales=none``), built
  from ``conf/`` with :func:`recsys_cli.compose.compose_train` and
  :func:`recsys_cli.builders.build_module`, sized like the reference (``model.dim``, 2 encoder
  layers, transformer with 1 head and ``ffn_mult=1``, ``model.dropout=0.2``, ``optimizer.lr=1e-3``;
  the product's optimizer is AdamW with weight decay 0, i.e. Adam); everything else is the
  product's default (event-type embeddings, gate fusion...);
- ``transformer+scales``, ``gru+scales``, ``lstm+scales``: the same with
  ``scales=session_day_month_all``;
- beyond the default set, any encoder followed by switches (``contenders.SWITCHES``): ``+hstu`` or
  ``+tisasrec`` (``model.encoder.time_bias``), ``+heads4`` (4 heads), ``+windows`` (4 heads with
  ``head_windows=[30m,1d,30d,null]``), ``+scales``; and ``bert``, BERT4Rec's sizes (2 heads,
  feed-forward 4 x dim) trained by the cloze task on the cloze data module's batches (the same
  users, masked inputs, its extra last-item cases: an epoch here is the next-item epoch's number
  of steps, so compare it by seconds per step). Ratios divide by ``--baseline`` (default the
  reference, else the first contender), e.g. ``--contenders transformer,transformer+hstu``.

Every contender trains on the batches of the product's data module (``build_datamodule``; the
training cases do not depend on the scales, and the batch order is the sampler's, seeded by
``seed`` and the epoch), so all of them see the same cases in the same order; a batch is gathered
once per data module and given to every contender that reads it. The training loop is this
file's, the same for every contender: per batch ``zero_grad``, loss, ``backward``, ``step``, timed
with ``time.perf_counter`` (synchronised on CUDA). The contenders alternate step by step (the order
rotates every step) so machine load affects them alike; each has its own random stream (seeded
with ``torch.manual_seed(seed)`` before it is built, then saved and restored around its steps).
After every epoch each contender is evaluated on the validation cases by full ranking with the
product's :class:`~recsys_cli.training.metrics.RankingMetrics` (the product through its own
``_eval_start`` / ``_eval_step`` / ``_eval_end``; the reference through the same metrics class, the
same ``seen`` filtering and the same targets), again alternating batch by batch.

Measurements (all in the JSON, ``--out``, written atomically after every epoch):

- training: supervised positions (``targets > 0``) per second of step time, seconds per epoch
  (step time + the time to gather that contender's batches), achieved GFLOP/s and its fraction of
  the machine's measured matmul GFLOP/s (below);
- validation NDCG@10 after every epoch, and the training seconds (cumulative epoch seconds, without
  evaluation) at which each ``--levels`` value was first reached (``null``: not reached);
- evaluation: users per second (forward, scoring the whole catalogue, ranking metrics), its GFLOP/s;
- memory: the persistent training state (parameters, gradients and Adam's two moments: 4 x the
  parameter bytes) and the transient peak of one training step and one evaluation batch. On CPU
  that is the resident set size (psutil), sampled every millisecond by a thread during two
  untimed forward+backward probes (no optimizer step, so the probes do not change the weights)
  run before training, after ``malloc_trim``; the RSS is process-wide, so the transient is the
  peak minus the RSS right before the probe. On CUDA the same probes read
  ``torch.cuda.max_memory_allocated`` (reset before each probe) minus ``torch.cuda.memory_allocated``
  before it; the run's overall CUDA peak is in ``machine.cuda_max_memory_allocated_mb``;
- padding: the share of the B x L encoder positions that are padding and the share of positions
  without a target, over the training batches: the product's batches come with the padding
  common to a whole batch trimmed (``L`` <= max_len; with ``data.bucket_pool`` the cases of a
  batch have similar lengths, ``--override data.bucket_pool=50``), the reference reads every batch
  left-padded back to max_len (its share is reported as the untrimmed one);
- the machine: GFLOP/s of timed square float32 matmuls (``--matmul-size``; the best of
  ``--matmul-reps``, measured before and after training, the better one is the "peak").

FLOPs are counted analytically (multiply-add = 2 FLOPs; gathers, element-wise work, softmaxes,
the ranking's comparisons and top-k are not counted), with B cases, L = max_len positions, D = dim,
N items, M supervised positions of the batch, F = ffn_mult * D, K sampled negatives:

- transformer encoder, per layer and position: QKV 6 D^2 + output projection 2 D^2 + FFN 4 D F
  + attention scores and mixing 4 L D (the full L x L, as SDPA computes it under a mask);
- GRU per layer and position 12 D^2 (3 gates x (input + hidden) D x D), LSTM 16 D^2;
- time-window scales (shared encoder, attention pooling), per position: query/key/value 6 D^2,
  one L x L score matrix 2 L D, S scales' mixing 2 S L D, statistics 2 S F_stats D, gate fusion
  2 S D^2 (the bags' prefix sums are element-wise: not counted);
- output layer, training: reference 2 B L D N (logits at every position), product full CE
  2 M D N (supervised positions only), product sampled softmax 2 M D (K + 1);
- training step = 3 x forward (backward = 2 x forward); recomputation (the product's streaming
  cross-entropy over catalogues above its item chunk) is not counted, as in MFU conventions;
- evaluation batch = B L x (encoder + scales per position) + 2 B D N (scoring the newest position).

Presets (``--preset``, :mod:`.presets`): ``ml1m`` (MovieLens-1M's own files, ``--data-path``,
default ``../shared/data/ml-1m-users1-1500``; SASRec's sizes: max_len 200, dropout 0.1, seen items
filtered; time to validation NDCG@10 0.05 / 0.10 / 0.15), ``ml1m_synthetic`` (a synthetic log
sized like MovieLens-1M: 6,000 users, 3,500 items, ~1M events; max_len 200: for scale, its learning
curve is not the real data's), ``shop100k`` and ``shop1m`` (shop-like logs, ~17 events per user,
100k / 1M items, max_len 50; the product trains with ``objective/next_item=sampled_softmax``
there, the reference with full cross-entropy where its [B x L, N] logits fit in memory, else it is
skipped with the reason printed), ``tiny`` (a few hundred users and items, one epoch of two
steps: the test suite's), ``ml100k`` (MovieLens-100k's RecBole files, ``--data-path``, default
``../shared/data/ml-100k``; max_len 200). All use dim 64 (tiny: 16), 2 layers, batch 128 (tiny:
32), dropout 0.2 unless said. The synthetic presets' data come from the product's synthetic
reader; the real counts after preparation are reported.
Prepared data are cached in ``--cache-dir`` (default: a folder in the system's temp directory),
so a re-run does not regenerate them.

Prints a Markdown table with ratios to the reference (throughput, seconds per epoch, evaluation
users per second, memory) and writes the JSON.

The package: :mod:`.presets` (data and sizes of each setting), :mod:`.reference` (the reference
SASRec), :mod:`.contenders` (who runs and how each trains and evaluates), :mod:`.flops`,
:mod:`.machine` (memory probes, matmul peak), :mod:`.report` (summaries, ratios, the table) and
:mod:`.run` (the loop). ``scripts/bench_speed.py`` is the command.
"""
