"""Configuration tables printed in arXiv 2507.17702 (v1), typed in by hand (§4.1, App. A-E,
Tables 3, 7-11).

Each group lists (n_layers, d_model, n_heads, n_kv_heads) and the rows that vary within it.
Table 8 prints no KV-head column; Table 7's values for the same groups are used.
"""

# Table 7: E in [2 .. 256], E_a = 2, E_s = 1; (layers, d_model, d_expert, heads, kv).
TABLE_7 = [
    (8, 384, 320, 8, 2),
    (8, 512, 512, 8, 2),
    (10, 640, 640, 10, 2),
    (14, 768, 768, 12, 4),
    (16, 1024, 1024, 16, 4),
    (22, 1280, 1280, 20, 4),
]
TABLE_7_EXPERTS = [2, 4, 8, 16, 32, 64, 128, 256]

# Table 8: (E, E_a, E_s) per G = 2, 4, 6, 8, 12, 16; rows give d_expert for each G.
TABLE_8_EXPERTS = [(64, 2, 1), (128, 4, 2), (192, 6, 3), (256, 8, 4), (384, 12, 6), (512, 16, 8)]
TABLE_8 = [
    ((8, 384, 8, 2), [384, 192, 128, 96, 64, 48]),
    ((8, 512, 8, 2), [512, 256, 170, 128, 85, 64]),
    ((10, 640, 10, 2), [640, 320, 213, 160, 106, 80]),
    ((14, 768, 12, 4), [768, 384, 256, 192, 128, 96]),
    ((16, 1024, 16, 4), [1024, 512, 341, 256, 170, 128]),
    ((22, 1280, 20, 4), [1280, 640, 426, 320, 213, 160]),
]

# Table 9: E = 256, E_a + E_s = 12; (layers, d_model, heads, kv, d_expert).
TABLE_9_SPLITS = [(2, 10), (4, 8), (6, 6), (8, 4), (11, 1), (12, 0)]
TABLE_9 = [
    (8, 384, 8, 2, 96),
    (8, 512, 8, 2, 128),
    (10, 640, 10, 2, 160),
    (14, 768, 12, 4, 192),
    (16, 1024, 16, 4, 256),
    (22, 1280, 20, 4, 320),
]

# Table 11: E = 64, E_a = 2, E_s = 1; (layers, heads, kv) and (d_model, d_expert) variants.
TABLE_11 = [
    ((8, 8, 2), [(352, 450), (368, 380), (384, 320), (400, 260), (416, 208)]),
    ((8, 8, 2), [(480, 626), (512, 512), (544, 410), (560, 364), (576, 320)]),
    ((10, 10, 2), [(600, 766), (640, 640), (680, 528), (700, 476), (740, 380)]),
    ((14, 12, 4), [(696, 988), (768, 768), (816, 642), (840, 584), (888, 474)]),
    ((16, 16, 4), [(896, 1378), (1024, 1024), (1088, 876), (1152, 742), (1184, 680)]),
    ((22, 20, 4), [(1120, 1686), (1280, 1280), (1360, 1110), (1440, 956), (1520, 816)]),
]

# Table 10: 60 layers, first n_dense of {0, 1, 2, 3} dense, E = 64, E_a = 2, E_s = 1;
# (d_model, d_ffn, heads, d_expert). KV heads are not printed; Table 7's are used.
TABLE_10_DENSE = [0, 1, 2, 3]
TABLE_10 = [
    (384, 1280, 8, 384),
    (512, 2048, 8, 512),
    (640, 2560, 10, 640),
    (768, 3072, 12, 768),
    (1024, 4096, 16, 1024),
    (1280, 5120, 20, 1280),
]

# Per group of Tables 7-11 (same order): printed peak learning rate, batch in 4096-token
# sequences, and "Max training FLOPs". Table 11 prints other batches (96, 160, 224, 320, 512,
# 768) and 10x learning rates for its last three groups (typos for e-4; App. D, Table 11).
GROUP_LR = [1.52e-3, 1.31e-3, 1.11e-3, 9.5e-4, 8.1e-4, 7.0e-4]
GROUP_BATCH = [98, 147, 228, 342, 531, 795]
TABLE_11_BATCH = [96, 160, 224, 320, 512, 768]
GROUP_MAX_FLOPS = [2e18, 6e18, 2e19, 6e19, 2e20, 6e20]
TABLE_7_KV = [2, 2, 2, 4, 4, 4]

# Table 3: the validation pair, 1T tokens of 8192-token sequences.
LING_MINI_BETA = dict(
    n_layers=20,
    d_model=2048,
    d_ffn=5120,
    d_expert=384,
    n_heads=16,
    n_kv_heads=4,
    n_experts=384,
    top_k=12,
    n_shared=1,
    num_dense_layers=1,
    learning_rate=3.78e-4,
    batch_size=1792,
)
DENSE_6P1B = dict(
    n_layers=28,
    d_model=4096,
    d_ffn=14336,
    n_heads=32,
    n_kv_heads=8,
    learning_rate=2.93e-4,
    batch_size=2048,
)
