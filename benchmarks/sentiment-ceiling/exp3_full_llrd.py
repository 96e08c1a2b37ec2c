from pathlib import Path
# Exp 3: full fine-tuning, mean pooling + dropout 0.1 + linear head, layer-wise lr decay 0.8
# (head and layer 5: 1e-4; layer i: 1e-4*0.8^(5-i); embeddings: 1e-4*0.8^6), cosine, warmup 10%,
# batch 16, wd 0.01, 6 epochs, eval each epoch (best epoch kept).
import random
import sys
import time

import common
import torch
from transformers import AutoModel, get_cosine_schedule_with_warmup

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 42
EPOCHS, LR, DECAY, BS, WD, WARM = 6, 1e-4, 0.8, 16, 0.01, 0.1
tok, data, names = common.get_data()
torch.manual_seed(seed); random.seed(seed)
enc = AutoModel.from_pretrained(common.MODEL, add_pooling_layer=False)
head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(384, 2))
L = enc.config.num_hidden_layers
groups = common.param_groups([('head.' + n, p) for n, p in head.named_parameters()], WD, LR)
groups += common.param_groups(enc.embeddings.named_parameters(), WD, LR * DECAY ** L)
for i, layer in enumerate(enc.encoder.layer):
    groups += common.param_groups(layer.named_parameters(), WD, LR * DECAY ** (L - 1 - i))
assert sum(p.numel() for g in groups for p in g['params']) == sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in head.parameters())
opt = torch.optim.AdamW(groups, lr=LR)
def logits_fn(b):
    h = enc(input_ids=b['input_ids'], attention_mask=b['attention_mask']).last_hidden_state
    return head(common.mean_pool(h, b['attention_mask']))
lossf = torch.nn.CrossEntropyLoss()
ids, labels, _ = data['train']
steps = EPOCHS * ((len(ids) + BS - 1) // BS)
sch = get_cosine_schedule_with_warmup(opt, int(round(WARM * steps)), steps)
gen = random.Random(seed)
out = str(Path(__file__).parent / 'results_exp3.jsonl')
train_s = 0.0
for ep in range(1, EPOCHS + 1):
    enc.train(); head.train(); t = time.time()
    for bi in common.batches(len(ids), BS, True, gen):
        b = common.collate(tok, [ids[i] for i in bi], [labels[i] for i in bi])
        loss = lossf(logits_fn(b), b['labels'])
        loss.backward(); opt.step(); sch.step(); opt.zero_grad()
    train_s += time.time() - t
    enc.eval(); head.eval(); acc = common.evaluate(logits_fn, tok, data['eval'])
    common.log(out, {'exp': 3, 'seed': seed, 'epoch': ep, 'eval_acc': acc, 'train_s_cum': round(train_s, 1)})
