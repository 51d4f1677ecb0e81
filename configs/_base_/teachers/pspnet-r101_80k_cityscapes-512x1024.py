# PSPNet R101-d8 of the mmseg model zoo (Cityscapes, 80k iterations on
# 512 x 1024 crops, 79.76 mIoU), built from the config its checkpoint was
# released with, so its settings match its weights.
teacher = dict(
    config='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/'
    'pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/'
    'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth')
