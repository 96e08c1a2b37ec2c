from pathlib import Path
import json

import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)
from transformers import AutoTokenizer

from tunesmith.assets import resolve_model
from tunesmith.config import load_config
from tunesmith.data.sources import load_splits

MAXLEN = 64
MODEL = str(resolve_model('minilm-l6'))

def get_data():
    cfg = load_config(str(Path(__file__).parents[2] / 'configs' / 'sentiment-lora.yaml'))
    dd = load_splits(cfg.data, cfg.train.seed)
    names = sorted(set(dd['train']['label']))  # ['fresh','rotten']
    tok = AutoTokenizer.from_pretrained(MODEL)
    out = {}
    for split in ('train', 'eval'):
        texts = list(dd[split]['text'])
        labels = [names.index(l) for l in dd[split]['label']]
        enc = tok(texts, truncation=True, max_length=MAXLEN)
        out[split] = (enc['input_ids'], labels, texts)
    return tok, out, names

def collate(tok, ids_list, labels=None):
    b = tok.pad({'input_ids': ids_list}, return_tensors='pt')
    if labels is not None:
        b['labels'] = torch.tensor(labels)
    return b

def batches(n, bs, shuffle, gen=None):
    idx = list(range(n))
    if shuffle:
        gen.shuffle(idx)
    for i in range(0, n, bs):
        yield idx[i:i+bs]

def mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

def param_groups(named_params, wd, lr=None):
    decay, no = [], []
    for n, p in named_params:
        if not p.requires_grad: continue
        (no if (n.endswith('bias') or 'LayerNorm' in n or 'layernorm' in n.lower()) else decay).append(p)
    g = [{'params': decay, 'weight_decay': wd}, {'params': no, 'weight_decay': 0.0}]
    if lr is not None:
        for x in g: x['lr'] = lr
    return g

@torch.no_grad()
def evaluate(logits_fn, tok, data, bs=64):
    ids, labels, _ = data
    correct = 0
    for bi in batches(len(ids), bs, False):
        b = collate(tok, [ids[i] for i in bi])
        pred = logits_fn(b).argmax(-1)
        correct += (pred == torch.tensor([labels[i] for i in bi])).sum().item()
    return correct / len(ids)

def log(path, rec):
    print(json.dumps(rec), flush=True)
    with open(path, 'a') as f:
        f.write(json.dumps(rec) + '\n')
