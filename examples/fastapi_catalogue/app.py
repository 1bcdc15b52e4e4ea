"""A product catalogue on FastAPI with nearstate as its read model.

Writes go through the dataset's Writer (``PUT``/``DELETE``); reads come from the state
each worker holds in memory. A client that wrote gets a signed token (cookie and
``X-Nearstate-Token``) and reads its own write on its next request to any worker;
``X-Nearstate-Consistency: strong`` (or ``?consistency=strong``) reads every write.

    NEARSTATE_DATASET=/tmp/catalogue NEARSTATE_SECRET=change-me-please-16+ \
        uvicorn app:app --workers 2
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

from nearstate import DatasetError, Schema, record
from nearstate.frameworks import Reading, ReadModel
from nearstate.frameworks.asgi import NearstateMiddleware
from nearstate.frameworks.fastapi import nearstate_dependency


@record(key="sku")
@dataclass
class Product:
    sku: str
    name: str
    category: str
    price_cents: int


SCHEMA = Schema.from_dataclasses(Product)

model = ReadModel(
    os.environ["NEARSTATE_DATASET"],
    secret=os.environ.get("NEARSTATE_SECRET", "an example secret, change it"),
    schema=SCHEMA,
    follow=os.environ.get("NEARSTATE_FOLLOW", "1") != "0",
)
app = FastAPI(title="nearstate catalogue example")
app.add_middleware(NearstateMiddleware, model=model)
Read = Annotated[Reading, Depends(nearstate_dependency(model))]


class ProductIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=100)
    price_cents: int = Field(ge=0)


@app.middleware("http")
async def worker_header(request: Any, call_next: Any) -> Any:
    response = await call_next(request)
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


def products(r: Reading) -> Any:
    try:
        return r.state.get("Product") or ()
    except DatasetError:  # nothing written yet
        return ()


@app.get("/products")
def list_products(r: Read, category: str | None = None) -> dict[str, Any]:
    rows = [p.to_dict() for p in products(r) if category is None or p.category == category]
    return {"consistency": r.consistency, "products": sorted(rows, key=lambda p: p["sku"])}


@app.get("/products/{sku}")
def show_product(sku: str, r: Read) -> dict[str, Any]:
    table = products(r)
    p = table.get(sku) if table else None
    if p is None:
        raise HTTPException(404, f"no product {sku!r}")
    return {"consistency": r.consistency, "product": p.to_dict()}


@app.put("/products/{sku}")
def put_product(sku: str, body: ProductIn, r: Read) -> dict[str, Any]:
    token = r.upsert("Product", {"sku": sku, **body.model_dump()})
    return {"sku": sku, "token": int(token)}


@app.delete("/products/{sku}", status_code=204)
def delete_product(sku: str, r: Read) -> None:
    r.delete("Product", sku)
