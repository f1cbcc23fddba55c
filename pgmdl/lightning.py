"""pgmdl on PyTorch Lightning: :class:`SVIModule`, a Pyro model and guide as a
``LightningModule`` (defined in :mod:`pgmdl.infer.svi_module`, where its
set-up, sharding, scaling and synchronization are described).

``pgmdl.fit(..., strategy="ddp")`` trains one; drive it with your own
``lightning.pytorch.Trainer`` for your loggers and callbacks::

    import lightning.pytorch as pl
    from pgmdl.lightning import SVIModule

    module = SVIModule(model, guide, x, batch_size=256, seed=0)
    pl.Trainer(strategy="ddp", devices=2, max_epochs=10,
               use_distributed_sampler=False).fit(module)
    module.result()

Importing this module imports Lightning (``pip install 'pgmdl[distributed]'``).
"""

from pgmdl.infer.svi_module import SVIModule

__all__ = ["SVIModule"]
