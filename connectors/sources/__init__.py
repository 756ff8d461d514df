"""Built-in source connectors, one module per format; importing this package registers every scheme."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
