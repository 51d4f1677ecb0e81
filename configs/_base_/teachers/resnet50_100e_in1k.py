# ResNet-50 of the mmpretrain model zoo (ImageNet-1k, 100 epochs, 76.55
# top-1), built from the config its checkpoint was released with.
teacher = dict(
    config='mmpretrain::resnet/resnet50_8xb32_in1k.py',
    checkpoint='https://download.openmmlab.com/mmclassification/v0/'
    'resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth')
