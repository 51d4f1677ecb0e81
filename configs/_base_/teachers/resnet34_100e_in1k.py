# ResNet-34 of the mmpretrain model zoo (ImageNet-1k, 100 epochs, 73.62
# top-1), built from the config its checkpoint was released with.
teacher = dict(
    config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
    checkpoint='https://download.openmmlab.com/mmclassification/v0/'
    'resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth')
