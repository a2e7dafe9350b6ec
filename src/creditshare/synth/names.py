"""Plausible Chinese enterprise names for synthetic records.

Names follow the registered-name pattern place + trade name + line of business +
legal form (e.g. 苏州恒达精密机械有限公司), so demos and screenshots read like
real registry extracts. They are decoration only: nothing keys on them, so
duplicates are allowed.
"""

from __future__ import annotations

import random

from creditshare.identity.chains import Division

__all__ = ["enterprise_name"]

_TRADE_FIRST = "恒华盛鑫德宏瑞金永嘉众博新天隆创安信兴源佳富通万"
_TRADE_SECOND = "达泰昌丰源利通远辉润成祥邦诚宇晟越航峰锦"

_COMPANY_LINES = (
    "精密机械",
    "电子科技",
    "信息技术",
    "贸易",
    "物流",
    "食品",
    "建材",
    "纺织",
    "新材料",
    "生物科技",
    "环保科技",
    "供应链管理",
    "餐饮管理",
    "建筑工程",
    "医疗器械",
    "化工",
    "服饰",
    "汽车配件",
    "软件",
    "网络科技",
    "文化传媒",
    "包装材料",
    "光电科技",
    "智能装备",
)
_COMPANY_FORMS = ("有限公司", "有限公司", "有限公司", "有限公司", "股份有限公司")

_SHOP_KINDS = (
    "五金店",
    "便利店",
    "餐馆",
    "服装店",
    "汽车修理部",
    "日用品商行",
    "水果店",
    "理发店",
    "建材经营部",
    "家电维修部",
)

_COOP_KINDS = ("蔬菜种植", "果蔬", "水稻种植", "茶叶", "生猪养殖", "水产养殖", "苗木", "食用菌")


def _trade_name(rng: random.Random) -> str:
    return rng.choice(_TRADE_FIRST) + rng.choice(_TRADE_SECOND)


def enterprise_name(rng: random.Random, entity_type: str, division: Division) -> str:
    """A name matching the entity type code of USCC position 1-2.

    ``entity_type`` is the two-character prefix: "92" individual businesses are
    shops, "93" farmers' cooperatives, anything else a limited company.
    """
    city = division.city_zh
    trade = _trade_name(rng)
    if entity_type == "92":
        return f"{city}市{trade}{rng.choice(_SHOP_KINDS)}"
    if entity_type == "93":
        return f"{city}市{trade}{rng.choice(_COOP_KINDS)}专业合作社"
    return f"{city}{trade}{rng.choice(_COMPANY_LINES)}{rng.choice(_COMPANY_FORMS)}"
