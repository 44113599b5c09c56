"""allwen: Acute Lymphoblastic Leukemia cell classification with Weighted Ensembles of Networks."""

__version__ = "0.1.0"
