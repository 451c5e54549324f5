"""The config schema: every key the code reads, its default and its meaning. Experiment configs call
`base_config()` (`from . import common`) and change a few fields; no key is defined anywhere else, so
`--config.KEY=VALUE` overrides work the same in every config and `config_lib.validate` checks them all.
"""

import ml_collections


def check_variant(config_file: str, arg: str | None, variants: tuple[str, ...] = ()) -> None:
  """Refuses an unknown `FILE.py:ARG` variant, naming the ones the file has."""
  if arg not in (None, "", *variants):
    known = " or ".join(f"':{v}'" for v in variants)
    raise ValueError(f"configs/{config_file}:{arg}: unknown variant; use no arg{' or ' + known if known else ''}.")


def base_config() -> ml_collections.ConfigDict:
  """Every training key with its default, locked: an experiment config changes values, it adds no keys."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds params init (random init), data order and dropout.
  c.num_steps = 100  # Optimizer steps; the last one is always checkpointed.
  c.batch_size = 64  # Global batch size (queries per step). Must be divisible by #devices.
  c.log_every_steps = 10  # Steps between metric logs (metrics.jsonl, TensorBoard, console).
  c.cpu_peak_flops = 2.94e11  # FLOP/s of this host's CPUs, for MFU on CPU (2 cores x 2.3 GHz x 64 fp32 FLOP/cycle).

  c.model = ml_collections.ConfigDict()
  # bi_encoder: one encoder embeds every text (Sentence-BERT, InfoNCE, distillation). cross_encoder: BERT
  # over [CLS] query [SEP] document [SEP] -> one relevance logit (monoBERT; duoBERT with objectives.ce_pairwise),
  # trained with the ce_* objectives on padded batches (data.packing=false) and exported as
  # BertForSequenceClassification. colbert: late interaction (the `colbert` block), exported in
  # sentence-transformers' MultiVectorEncoder layout.
  c.model.family = "bi_encoder"
  c.model.init = "minilm"  # "minilm" (packaged all-MiniLM-L6-v2), an HF/ST directory, or "random".
  # Keep only these layers of the pretrained model.init (0-based, in order), e.g. (0, 2, 4): a shallower
  # student initialised from its teacher (distillation); () = every layer.
  c.model.layers = ()
  c.model.tokenizer = "minilm"  # Directory with tokenizer.json (used when init is "random").
  c.model.bert = ml_collections.ConfigDict()  # Architecture for random init (a directory brings its own).
  c.model.bert.vocab_size = 30522  # Must match the tokenizer's vocabulary.
  c.model.bert.hidden_size = 384  # Width.
  c.model.bert.num_hidden_layers = 6  # Depth.
  c.model.bert.num_attention_heads = 12  # Must divide hidden_size.
  c.model.bert.intermediate_size = 1536  # MLP width.
  c.model.bert.max_position_embeddings = 512  # Longest input in tokens; data.max_length must fit.
  c.model.pooling = "mean"  # mean|cls|max, for random init and dirs without 1_Pooling/config.json.
  c.model.normalize = True  # L2-normalise embeddings (random init and dirs without modules.json).
  c.model.max_seq_length = 256  # Exported max_seq_length for random init (dirs bring their own).
  c.model.dropout_rate = 0.1  # Hidden and attention dropout during training.
  c.model.dtype = "float32"  # Compute dtype: float32 or bfloat16 (params stay fp32).
  c.model.remat = False  # Recompute layer activations in the backward pass to save memory.
  # Prompts prepended to the texts (sentence-transformers' `prompts`): the query prompt to anchors in
  # training, to queries in evaluation and `encode(prompt_name="query")`; the document prompt to positives,
  # negatives and the corpus. Exported into config_sentence_transformers.json. "" = no prompt.
  c.model.prompts = ml_collections.ConfigDict()
  c.model.prompts.query = ""
  c.model.prompts.document = ""

  c.data = ml_collections.ConfigDict()
  # Training source (README, "Data sources"); file paths are relative to the directory the command runs in.
  c.data.train = "nli:data/nli/train_sample.jsonl.gz"
  c.data.view = "nli_full"  # pairs | triplets | nli_full | duplicates: the columns the objectives read.
  c.data.max_length = 64  # Tokens per text; longer texts are truncated.
  c.data.query_max_length = 0  # Tokens per anchor (query) text; 0 = data.max_length.
  c.data.document_max_length = 0  # Tokens per positive / negative text; 0 = data.max_length.
  c.data.num_negatives = 1  # Hard negatives per query (k) read from a triples row's negatives list.
  # m more negatives per triples record: other rows' positives (never the record's own), drawn with the seed.
  c.data.pool_negatives = 0
  # random: shuffled records; no_duplicates: also keeps two rows of one query, or of one positive document,
  # out of the same global batch (sentence-transformers' NoDuplicatesBatchSampler).
  c.data.sampler = "random"
  c.data.buckets = ()  # Length buckets (e.g. (32, 64)); () pads every batch to max_length (one jit shape).
  # Packing: every text of a device's share of the batch goes into rows of the longest max length (query or
  # document), several texts per row (block-diagonal attention, positions restarting per text), so little
  # compute goes to padding; rows per device are rounded up to pack_row_multiple (a few jit shapes). On the
  # bundled NLI triplets 7% of the positions are padding packed, 76% padded to length buckets (train steps
  # 3.7x faster, benchmarks/train_throughput.py). Off: padded batches (data.buckets).
  c.data.packing = True
  c.data.pack_max_slots = 0  # Texts per row at most; 0 = row length // 8.
  c.data.pack_row_multiple = 4  # Rows per device: a multiple of this (and of the GradCache chunk count).
  c.data.tfds_data_dir = ""  # data_dir for tfds: sources ("" = TFDS default).
  c.data.skip_invalid = False  # Skip (and count) invalid rows instead of failing, e.g. SNLI's "-" labels.

  c.objectives = ml_collections.ConfigDict()  # Objective name -> loss weight (0 = off).
  c.objectives.nli_softmax = 1.0  # Sentence-BERT softmax(W [u; v; |u-v|]) over E/N/C.
  c.objectives.infonce = 1.0  # Multiple-negatives ranking / InfoNCE.
  c.objectives.sts_cosine = 0.0  # MSE(cos(u, v), score / 5).
  c.objectives.triplet = 0.0  # max(|a-p| - |a-n| + margin, 0).
  c.objectives.sigmoid = 0.0  # SigLIP pairwise sigmoid over InfoNCE's candidates (negatives, hard negatives, masks).
  # Distillation into a bi-encoder (the `distill` block): teacher scores of each query's positive and
  # negatives from the triples file (`neuralir mine --teacher CE_DIR` writes them), or a teacher's embeddings.
  c.objectives.margin_mse = 0.0  # MSE(s(q,p) - s(q,n), t(q,p) - t(q,n)) per hard negative (Hofstaetter et al.).
  c.objectives.listwise_kl = 0.0  # KL(softmax(t / T) || softmax(s)) over each query's positive and negatives.
  c.objectives.embedding_mse = 0.0  # MSE(student(text), teacher(source text)): Reimers & Gurevych 2020.
  # Cross-encoder objectives (model.family=cross_encoder), on the logits of (query, document) pairs:
  c.objectives.ce_pointwise = 0.0  # monoBERT: binary cross-entropy, positive 1 / negatives 0 (or score / 5).
  c.objectives.ce_listwise = 0.0  # Softmax cross-entropy over the positive and the k negatives of a query.
  c.objectives.ce_pairwise = 0.0  # duoBERT: BCE on [CLS] q [SEP] d_i [SEP] d_j [SEP], both orders of (p, n_j).

  c.infonce = ml_collections.ConfigDict()
  c.infonce.temperature = 0.05  # tau; logits are cos / tau.
  c.infonce.learnable_temperature = False  # Learn log(1/tau), clipped so 1/tau <= 100.
  c.infonce.symmetric = False  # Add the document -> query term.
  c.infonce.hard_negatives = True  # Use the `negative` column as a hard negative per query.
  # Mask candidates that are a judged positive of the query (by document id when the data has ids, else by
  # text) instead of scoring them as negatives. Off = sentence-transformers' MultipleNegativesRankingLoss.
  c.infonce.mask_false_negatives = True
  # dense: each device builds its [local batch, all candidates] logits. tiled: it walks blocks of block_size
  # candidates with a running log-sum-exp and recomputes them in the backward pass (custom VJP), so the
  # loss needs O(local batch x block_size) memory, not O(local batch x global batch x (1 + k)). Same values.
  c.infonce.implementation = "dense"
  c.infonce.block_size = 1024  # Candidates per block of the tiled walk.
  # Negative queue (MoCo / cross-batch memory): the last queue_size candidate embeddings of earlier steps (no
  # gradient) join every step's candidates, split over the devices and saved in checkpoints. 0 = off. A
  # multiple of the device count; a multiple of batch_size * (1 + k) keeps whole steps.
  c.infonce.queue_size = 0
  c.matryoshka = ml_collections.ConfigDict()
  # Matryoshka representation learning: the embedding objectives are applied to the first d dims of the
  # embeddings (re-normalised) for each d, weighted; () = off. E.g. dims (384, 256, 128, 64), weights (1,)*4.
  c.matryoshka.dims = ()
  c.matryoshka.weights = ()
  c.sigmoid = ml_collections.ConfigDict()  # Learnt scale t = exp(log t) and bias b of sigmoid(t q.c + b).
  c.sigmoid.scale_init = 10.0  # SigLIP's initial t.
  c.sigmoid.bias_init = -10.0  # SigLIP's initial b: starts near the prior of mostly negative pairs.
  c.distill = ml_collections.ConfigDict()
  # Student scores are scale * cos(q, d) (the InfoNCE logits' 1 / tau) against the teacher's raw logits
  # (ColBERT: scale * MaxSim, so 1 there).
  c.distill.scale = 20.0
  c.distill.teacher_temperature = 1.0  # T of listwise_kl's teacher softmax.
  # Which scores teach: "teacher" (a triples row's teacher_positive_scores / teacher_negative_scores, from
  # `neuralir mine --teacher`), "miner" (positive_scores / negative_scores, the mining model's own), or
  # "cross_encoder" (the cross-encoder distill.teacher scores every record's pairs when training starts).
  c.distill.scores = "teacher"
  # Multiplies the teacher scores before use: 1 for a cross-encoder's logits; a dense miner's cosines are on
  # the student's cos scale, so distill.scale (20) puts them on its scale * cos.
  c.distill.teacher_scale = 1.0
  # embedding_mse: the teacher bi-encoder (directory, workdir or "minilm") that embeds each record's anchor
  # (the source sentence) once before training; the student learns that vector for every text of
  # distill.embedding_columns: ("anchor",) for one language; ("anchor", "positive") for a parallel: source
  # (the sentence and its translation both learn the sentence's vector). With distill.scores=cross_encoder:
  # the teacher cross-encoder (directory or workdir).
  c.distill.teacher = ""
  c.distill.embedding_columns = ("anchor",)
  # ColBERT (model.family=colbert): BERT's token vectors projected to `dim` and L2-normalised, MaxSim
  # scoring. Markers are model.prompts (e.g. "[unused0] " / "[unused1] ", made single special tokens);
  # queries are padded with [MASK] to data.query_max_length, documents truncated to data.document_max_length.
  c.colbert = ml_collections.ConfigDict()
  c.colbert.dim = 128  # Projection width (ColBERT's 128).
  c.colbert.attend_expansion = True  # The query's [MASK] padding is attended to (the ColBERT paper).
  c.colbert.skip_punctuation = True  # Documents' punctuation tokens are not scored (ColBERT's skiplist).
  c.colbert.mask_token_id = -1  # The expansion token's id; -1 = the tokenizer's [MASK].
  c.colbert.skiplist_ids = ()  # Token ids never scored in documents; () = the punctuation's, when skipped.
  # Documents' length when the trained model encodes them (eval, rerank, export); 0 = data.document_max_length.
  c.colbert.document_length = 0
  c.triplet = ml_collections.ConfigDict()
  c.triplet.margin = 1.0  # Euclidean margin (Sentence-BERT paper: 1).
  c.negatives = "global"  # global: candidates gathered from every device; local: own batch only.

  c.parallel = ml_collections.ConfigDict()
  c.parallel.strategy = "pjit"  # pjit (jit over a Mesh, loss in shard_map) or pmap.
  c.parallel.fsdp = False  # pjit only: shard params and optimizer state over the data axis.
  c.grad_cache = ml_collections.ConfigDict()
  c.grad_cache.chunk_size = 0  # GradCache: examples PER DEVICE per chunk (divides the per-device batch); 0 = off.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 2e-5  # Peak learning rate after warmup.
  c.optimizer.warmup_fraction = 0.1  # Fraction of num_steps with linear warmup, then linear decay to 0.
  c.optimizer.warmup_steps = -1  # Warmup in steps; >= 0 overrides warmup_fraction.
  c.optimizer.weight_decay = 0.01  # AdamW decay; never applied to LayerNorm params or biases.
  c.optimizer.clip_norm = 1.0  # Global gradient-norm clipping (0 = off).
  c.optimizer.head_lr_multiplier = 1.0  # LR multiplier for the NLI head, learnable temperature, cross-encoder head.
  c.optimizer.b1 = 0.9  # Adam first-moment decay.
  c.optimizer.b2 = 0.999  # Adam second-moment decay.
  c.optimizer.eps = 1e-8  # Adam denominator epsilon: torch.optim.AdamW's and the HF Trainer's default.

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 100  # Steps between Orbax checkpoints (saved asynchronously).
  c.checkpoint.keep = 2  # Latest checkpoints kept (>= 1; the final step is always saved).

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 0  # Steps between in-training evaluations of eval.tasks (0 = none during training).
  c.eval.tasks = ()  # Task strings: sts:FILE.tsv[.gz], beir:DIR[:SPLIT], nli:FILE (softmax-head accuracy).
  c.eval.batch_size = 128  # Texts per encode batch.
  c.eval.exclude_self = False  # BEIR ArguAna/Quora: drop a retrieved document whose id equals the query id.
  return c.lock()


def ablation_base_config() -> ml_collections.ConfigDict:
  """base_config() plus the `ablation` block that `neuralir ablate` reads (training configs have none)."""
  a = ml_collections.ConfigDict()
  a.settings = []  # One dict per run: "name" (its subdirectory under the workdir) + config keys to set.
  a.eval_tasks = ()  # Task strings evaluated after each run (exact search): sts:FILE, beir:DIR[:SPLIT].
  a.budget = "steps"  # "steps": num_steps per run; "examples": num_steps = examples_per_run // batch_size.
  a.examples_per_run = 0  # Examples per run when budget = "examples".
  a.only = ""  # Comma-separated setting names to run ("" = all); results.csv lists the runs done.
  # Seeds every setting runs with (run NAME_seedS each); () = config.seed once. summary.csv and the plot
  # give each setting's mean, standard deviation and 95% t interval over its runs.
  a.seeds = ()
  a.num_cpu_devices = 8  # Fake CPU devices when JAX_NUM_CPU_DEVICES is unset (ignored on GPU/TPU).
  c = base_config()
  with c.unlocked():  # Locked again on exit, the new block included.
    c.ablation = a
  return c
