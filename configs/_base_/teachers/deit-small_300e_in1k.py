# DeiT-small (6 heads) of the mmpretrain model zoo (ImageNet-1k, 300 epochs,
# 80.69 top-1), built from the config its checkpoint was released with.
teacher = dict(
    config='mmpretrain::deit/deit-small_4xb256_in1k.py',
    checkpoint='https://download.openmmlab.com/mmclassification/v0/deit/'
    'deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth')
